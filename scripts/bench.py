"""Runner overhead: images per second through `python -m ganlab train` against the same
networks and optimizers stepped by a bare loop over tensors already in memory (a benchmark,
not a test).

    python scripts/bench.py [--device cpu] [--batch-size 64] [--scale 1.0 | --steps N]
                            [--precision 32|bf16|16] [--compile] [--channels-last]
                            [--repeat 3] [--only dcgan-28,vae] [--out bench.json]
    python scripts/bench.py --streaming [--device cpu] [--images 5000,20000] [--steps 60]

--streaming compares the streamed data path with the on-device one instead (speed and peak
memory against the dataset's size): see scripts/bench_streaming.py.

For each case the runner's number is `steady_steps_per_second` from the run's metrics.json
(the training loop after its first min(50, steps / 5) steps, with logging, the progress bar,
sample grids and checkpoints at their default cadence; the final evaluation and save are
outside it). The bare
loop is what a hand-written script would do: the same builders, Adam settings and batch, one
optimizer step per network, no logging. The ratio runner/bare - 1 is the overhead.

The speed switches reach both sides alike. --precision: the runner gets trainer.precision;
the bare loop runs its forward passes and losses under torch.autocast(device type, dtype) and,
at fp16, steps through a torch.amp.GradScaler (scale(loss).backward(), step(optimizer), one
update() per training step), as torch's AMP recipe does. (No case has a gradient penalty, the
part ganlab keeps in fp32 under autocast; the bare GAN loop refuses a config with one.)
--compile: the runner gets trainer.compile=true; the bare loop compiles each network in place
with module.compile() (default mode; parameter names unchanged), after moving it to the
device and memory format. The compile is left out of both numbers: the runner's rate skips
its first min(50, steps/5) steps, at least 5 as a case runs 25 steps or more, and the bare
loop's warm-up is as long and at least COMPILE_WARMUP_STEPS (3) when compiling, enough for the
first compile and the recompiles of the first steps (D on real then detached fakes, say).
Recompiles later in a run (a sample grid in eval mode) stay in the runner's number, as they
are part of a real run's time. --channels-last: the runner gets trainer.channels_last=true;
the bare loop converts its networks and every 4-D image batch to torch.channels_last.
The settings head the printed table and are stored in the JSON, beside the device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

MNIST = ["dataset=mnist", "dataset.source=bundled"]
# name -> (train overrides, bare loop kind, steps: about 10-25 s per measurement on 2 CPU
# cores, so that sample grids and checkpoints at their default cadence fall inside the fast
# cases); GAN quality metrics off: they measure, they do not train
CASES = {
    "dcgan-28": ([*MNIST, "model=dcgan", "eval.classifier_metrics=false"], "gan", 300),
    "dcgan-64": (["dataset=synthetic", "dataset.image_size=64", "dataset.channels=3",
                  "dataset.n_samples=2048", "model=dcgan"], "gan", 30),
    "mlp_gan": ([*MNIST, "model=mlp_gan", "eval.classifier_metrics=false"], "gan", 3000),
    "vae": ([*MNIST, "model=vae", "eval.classifier_metrics=false"], "vae", 4000),
    "lenet": ([*MNIST, "model=lenet"], "classifier", 300),
    "lenet-pgd7": ([*MNIST, "model=lenet", "defense=pgd", "defense.steps=7",
                    "defense.step_size=0.1"], "classifier", 60),
    "cyclegan-64": (["dataset=red2blue", "dataset.image_size=64", "model=cyclegan"],
                    "cyclegan", 30),
}
# cases trained at their paper's batch size whatever --batch-size says
FIXED_BATCH = {"cyclegan-64": 1}
# images per step and batch element: CycleGAN takes one image of each domain
IMAGES_PER_EXAMPLE = {"cyclegan-64": 2}
WARMUP_STEPS = 50  # as ganlab.loop: the first min(50, total // 5) steps are not timed
MIN_STEPS = 25  # so that the runner leaves at least 5 warm-up steps out of its rate
COMPILE_WARMUP_STEPS = 3  # the bare loop's least warm-up with --compile: the compiles' steps
# trainer.precision -> autocast dtype (None: plain fp32), as ganlab.amp
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class Switches:
    """trainer.precision, trainer.compile and trainer.channels_last done by hand, the way a
    script following torch's AMP, torch.compile and channels-last recipes would."""

    def __init__(self, trainer, device: torch.device) -> None:
        self.dtype = PRECISIONS[str(trainer.precision)]
        self.device_type = device.type
        self.compile = bool(trainer.compile)
        self.memory_format = (torch.channels_last if trainer.channels_last
                              else torch.contiguous_format)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype is torch.float16 else None

    def network(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        module = module.to(device, memory_format=self.memory_format)
        if self.compile:
            module.compile()  # in place: the same module, parameters and state_dict keys
        return module

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in the networks' memory format (other tensors unchanged)."""
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def autocast(self):
        """The forward passes and losses (a no-op at fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def optimize(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """zero_grad, backward, step: at fp16 through the GradScaler."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)  # unscales; skipped when the gradients overflowed

    def end_step(self) -> None:
        """Once per training step, after every optimizer's step: fp16 adapts its scale."""
        if self.scaler is not None:
            self.scaler.update()


def runner(overrides: list[str], work: Path, name: str) -> float:
    run = work / name
    env = {**os.environ, "GANLAB_DATA": str(work / "data")}
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", *overrides,
                             "log.progress=true", f"hydra.run.dir={run}"], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{name}: {result.stderr[-2000:]}")
    return json.loads((run / "metrics.json").read_text())["steady_steps_per_second"]


def bare(kind: str, cfg, device: torch.device, steps: int, warmup: int) -> float:
    """The same steps as a hand-written script: pytorch/examples style."""
    from ganlab.attacks import pgd
    from ganlab.data import build_dataset
    from ganlab.models import MODELS

    data = build_dataset(cfg.dataset, Path(cfg.data_dir), 0)
    batch = cfg.trainer.batch_size
    torch.manual_seed(0)
    on = Switches(cfg.trainer, device)
    if kind == "cyclegan":
        return bare_cyclegan(cfg, data, device, steps, warmup, on)
    x_all = data.x.to(device)
    y_all = data.y.to(device) if data.y is not None else None

    if kind == "gan":
        if cfg.loss.name != "nonsaturating" or cfg.loss.gp_weight:
            sys.exit(f"the bare GAN loop does the nonsaturating loss without a gradient "
                     f"penalty, not loss={cfg.loss.name} (gp_weight={cfg.loss.gp_weight})")
        nets = MODELS.get(cfg.model.name)(cfg.model, data.spec)
        G, D = on.network(nets.G, device), on.network(nets.D, device)
        low, high = nets.value_range
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        ones = torch.ones(batch, device=device)
        zeros = torch.zeros(batch, device=device)

        def step(index):
            real = on.images(x_all[index].float() * ((high - low) / 255) + low)
            with on.autocast():
                fake = G(torch.randn(batch, nets.latent_dim, device=device))
                loss_d = (F.binary_cross_entropy_with_logits(D(real), ones) +
                          F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
            on.optimize(loss_d, opt_d)
            with on.autocast():
                loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
            on.optimize(loss_g, opt_g)
            on.end_step()
    elif kind == "vae":
        nets = MODELS.get(cfg.model.name)(cfg.model, data.spec)
        enc, dec = on.network(nets.encoder, device), on.network(nets.decoder, device)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

        def step(index):
            x = on.images(x_all[index].float() / 255)
            with on.autocast():
                mu, logvar = enc(x).chunk(2, dim=1)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
                kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                loss = (recon + kl) / batch
            on.optimize(loss, opt)
            on.end_step()
    else:
        model = on.network(MODELS.get(cfg.model.name)(cfg.model, data.spec), device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        d = cfg.defense

        def step(index):
            x, y = on.images(x_all[index].float() / 255), y_all[index]
            with on.autocast():  # PGD's passes too: the runner's whole step is under autocast
                if d.name == "pgd":
                    x = pgd(model, x, y, d.eps, d.step_size, d.steps, d.random_start)
                loss = F.cross_entropy(model(x), y)
            on.optimize(loss, opt)
            on.end_step()

    generator = torch.Generator().manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        step(torch.randint(len(x_all), (batch,), generator=generator).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def bare_cyclegan(cfg, data, device: torch.device, steps: int, warmup: int,
                  on: Switches) -> float:
    """The reference implementation's step (G_A/G_B with D frozen, then D_A/D_B on pooled
    fakes; LSGAN, cycle and identity L1) on crops prepared in memory."""
    import itertools

    from ganlab.families.pool import ImagePool
    from ganlab.models import MODELS

    size = data.spec.shape[-1]
    a_all = data.a[:, :, :size, :size].to(device).float() / 127.5 - 1
    b_all = data.b[:, :, :size, :size].to(device).float() / 127.5 - 1
    nets = MODELS.get("cyclegan")(cfg.model, data.spec)
    g_ab, g_ba, d_a, d_b = (on.network(n, device)
                            for n in (nets.G_AB, nets.G_BA, nets.D_A, nets.D_B))
    opt_g = torch.optim.Adam(itertools.chain(g_ab.parameters(), g_ba.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    pool_a, pool_b = ImagePool(50), ImagePool(50)
    batch = cfg.trainer.batch_size

    def mse(scores, target):
        return F.mse_loss(scores, torch.full_like(scores, target))

    def step(i):
        a = on.images(a_all[i * batch % len(a_all)][None])
        b = on.images(b_all[i * batch % len(b_all)][None])
        d_a.requires_grad_(False)
        d_b.requires_grad_(False)
        with on.autocast():
            fake_b, fake_a = g_ab(a), g_ba(b)
            loss = (mse(d_b(fake_b), 1.0) + mse(d_a(fake_a), 1.0) +
                    10 * F.l1_loss(g_ba(fake_b), a) + 10 * F.l1_loss(g_ab(fake_a), b) +
                    5 * F.l1_loss(g_ba(a), a) + 5 * F.l1_loss(g_ab(b), b))
        on.optimize(loss, opt_g)
        d_a.requires_grad_(True)
        d_b.requires_grad_(True)
        with on.autocast():
            old_a, old_b = pool_a.query(fake_a.detach()), pool_b.query(fake_b.detach())
            loss_d = 0.5 * (mse(d_a(a), 1.0) + mse(d_a(old_a), 0.0) +
                            mse(d_b(b), 1.0) + mse(d_b(old_b), 0.0))
        on.optimize(loss_d, opt_d)
        on.end_step()

    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def bare_in_fresh_process(name: str, overrides: list[str], work: Path, steps: int,
                          warmup: int) -> float:
    """The bare loop in a process of its own, like the runner: same start, same allocator."""
    spec = json.dumps({"case": name, "overrides": overrides, "data_dir": str(work / "data"),
                       "steps": steps, "warmup": warmup})
    result = subprocess.run([sys.executable, __file__, "--bare", spec], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{name} (bare): {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def bare_main(spec_json: str) -> None:
    from ganlab.config import compose
    from ganlab.runtime import flush_denormals

    flush_denormals()  # as ganlab's runner does: the overhead compares like with like
    spec = json.loads(spec_json)
    cfg = compose(spec["overrides"])
    OmegaConf.update(cfg, "data_dir", spec["data_dir"])
    device = torch.device(cfg.device)
    print(bare(CASES[spec["case"]][1], cfg, device, spec["steps"], spec["warmup"]))


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


def streaming_main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_streaming

    parser = argparse.ArgumentParser(description=bench_streaming.__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", default="5000,20000", help="dataset sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default="bench_streaming.json")
    args = parser.parse_args(argv)
    bench_streaming.main(args.device, [int(n) for n in args.images.split(",")], args.steps,
                         args.repeat, args.out)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        bare_main(sys.argv[2])
        return
    if "--streaming" in sys.argv:
        streaming_main([a for a in sys.argv[1:] if a != "--streaming"])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--scale", type=float, default=1.0,
                        help="multiplies every case's number of steps (GPU: try 10); at least "
                             f"{MIN_STEPS} steps whatever the product")
    length.add_argument("--steps", type=int, default=None,
                        help=f"every case runs this many steps instead (at least {MIN_STEPS})")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="32",
                        help="trainer.precision; the bare loop autocasts (fp16: GradScaler)")
    parser.add_argument("--compile", action="store_true",
                        help="trainer.compile=true; the bare loop compiles each network in "
                             "place (module.compile()); compile time is in the warm-up")
    parser.add_argument("--channels-last", action="store_true",
                        help="trainer.channels_last=true; the bare loop converts networks "
                             "and image batches to torch.channels_last")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved measurements of each; the medians are compared")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args()
    if args.steps is not None and args.steps < MIN_STEPS:
        parser.error(f"--steps must be at least {MIN_STEPS}: the runner's rate leaves out the "
                     "first steps/5 (the warm-up, and with --compile the compile)")
    names = list(dict.fromkeys(args.only.split(","))) if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-"))
    device = torch.device(args.device)
    rows = []
    settings = {"device": str(device), "precision": args.precision, "compile": args.compile,
                "channels_last": args.channels_last}
    switches = [f"trainer.precision={args.precision}",
                f"trainer.compile={str(args.compile).lower()}",
                f"trainer.channels_last={str(args.channels_last).lower()}"]
    print(f"# device {device}, precision {args.precision}, compile {on_off(args.compile)}, "
          f"channels_last {on_off(args.channels_last)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'case':<11} {'batch':>5} {'steps':>5} {'runner img/s':>13} {'bare img/s':>11} "
          f"{'overhead':>9}")
    for name in names:
        overrides, _, steps = CASES[name]
        batch = FIXED_BATCH.get(name, args.batch_size)
        total = args.steps if args.steps is not None else max(MIN_STEPS,
                                                                 round(steps * args.scale))
        warmup = min(WARMUP_STEPS, total // 5)  # the runner's, as ganlab.loop
        # the bare loop times as many steps as the runner, after a warm-up that covers a compile
        bare_warmup = max(warmup, COMPILE_WARMUP_STEPS) if args.compile else warmup
        common = [*overrides, f"trainer.batch_size={batch}", f"trainer.max_steps={total}",
                  f"device={args.device}", "eval.every=0", *switches]
        # interleaved repeats, medians: a shared VM's speed drifts by tens of percent
        bare_rates, runner_rates = [], []
        for i in range(args.repeat):
            bare_rates.append(bare_in_fresh_process(name, common, work, total - warmup,
                                                    bare_warmup))
            runner_rates.append(runner(common, work, f"{name}-{i}"))
        bare_rate, runner_rate = statistics.median(bare_rates), statistics.median(runner_rates)
        # real images per step (d_steps is 1 in every case)
        images = batch * IMAGES_PER_EXAMPLE.get(name, 1)
        row = {"case": name, "batch": batch, "steps": total, "runner_warmup_steps": warmup,
               "bare_warmup_steps": bare_warmup, "runner_images_per_s":
               runner_rate * images, "bare_images_per_s": bare_rate * images,
               "overhead": bare_rate / runner_rate - 1,
               "runner_steps_per_s_each": runner_rates, "bare_steps_per_s_each": bare_rates}
        rows.append(row)
        print(f"{name:<11} {batch:>5} {total:>5} {row['runner_images_per_s']:>13.1f} "
              f"{row['bare_images_per_s']:>11.1f} {row['overhead']:>8.1%}", flush=True)
    Path(args.out).write_text(json.dumps({**settings, "torch": torch.__version__,
                                          "threads": torch.get_num_threads(),
                                          "batch_size": args.batch_size,
                                          "scale": None if args.steps else args.scale,
                                          "steps": args.steps, "repeat": args.repeat,
                                          "rows": rows}, indent=2))
    print(f"wrote {args.out}; runs in {work}")


if __name__ == "__main__":
    main()
