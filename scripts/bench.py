"""Runner overhead: images per second through `python -m ganlab train` against the same
networks and optimizers stepped by a bare loop over tensors already in memory (a benchmark,
not a test).

    python scripts/bench.py [--device cpu] [--batch-size 64] [--scale 1.0]
                            [--repeat 3] [--only dcgan-28,vae] [--out bench.json]

For each case the runner's number is `steady_steps_per_second` from the run's metrics.json
(the training loop after its first min(50, steps / 5) steps, with logging, the progress bar,
sample grids and checkpoints at their default cadence; the final evaluation and save are
outside it). The bare
loop is what a hand-written script would do: the same builders, Adam settings and batch, one
optimizer step per network, no logging. The ratio runner/bare - 1 is the overhead.
"""

from __future__ import annotations

import argparse
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
    "vae": ([*MNIST, "model=vae"], "vae", 4000),
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


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ganlab.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


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
    if kind == "cyclegan":
        return bare_cyclegan(cfg, data, device, steps, warmup)
    x_all = data.x.to(device)
    y_all = data.y.to(device) if data.y is not None else None

    if kind == "gan":
        nets = MODELS.get(cfg.model.name)(cfg.model, data.spec, gradient_penalty=False)
        G, D = nets.G.to(device), nets.D.to(device)
        low, high = nets.value_range
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        ones = torch.ones(batch, device=device)
        zeros = torch.zeros(batch, device=device)

        def step(index):
            real = x_all[index].float() * ((high - low) / 255) + low
            fake = G(torch.randn(batch, nets.latent_dim, device=device))
            loss_d = (F.binary_cross_entropy_with_logits(D(real), ones) +
                      F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
    elif kind == "vae":
        nets = MODELS.get(cfg.model.name)(cfg.model, data.spec, variational=True)
        enc, dec = nets.encoder.to(device), nets.decoder.to(device)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

        def step(index):
            x = x_all[index].float() / 255
            mu, logvar = enc(x).chunk(2, dim=1)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (recon + kl) / batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model = MODELS.get(cfg.model.name)(cfg.model, data.spec).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        d = cfg.defense

        def step(index):
            x, y = x_all[index].float() / 255, y_all[index]
            if d.name == "pgd":
                x = pgd(model, x, y, d.eps, d.step_size, d.steps, d.random_start)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    generator = torch.Generator().manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        step(torch.randint(len(x_all), (batch,), generator=generator).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def bare_cyclegan(cfg, data, device: torch.device, steps: int, warmup: int) -> float:
    """The reference implementation's step (G_A/G_B with D frozen, then D_A/D_B on pooled
    fakes; LSGAN, cycle and identity L1) on crops prepared in memory."""
    import itertools

    from ganlab.families.pool import ImagePool
    from ganlab.models import MODELS

    size = data.spec.shape[-1]
    a_all = data.a[:, :, :size, :size].to(device).float() / 127.5 - 1
    b_all = data.b[:, :, :size, :size].to(device).float() / 127.5 - 1
    nets = MODELS.get("cyclegan")(cfg, data.spec)
    g_ab, g_ba, d_a, d_b = (n.to(device) for n in (nets.G_AB, nets.G_BA, nets.D_A, nets.D_B))
    opt_g = torch.optim.Adam(itertools.chain(g_ab.parameters(), g_ba.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    pool_a, pool_b = ImagePool(50), ImagePool(50)
    batch = cfg.trainer.batch_size

    def mse(scores, target):
        return F.mse_loss(scores, torch.full_like(scores, target))

    def step(i):
        a, b = a_all[i * batch % len(a_all)][None], b_all[i * batch % len(b_all)][None]
        fake_b, fake_a = g_ab(a), g_ba(b)
        d_a.requires_grad_(False)
        d_b.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        loss = (mse(d_b(fake_b), 1.0) + mse(d_a(fake_a), 1.0) +
                10 * F.l1_loss(g_ba(fake_b), a) + 10 * F.l1_loss(g_ab(fake_a), b) +
                5 * F.l1_loss(g_ba(a), a) + 5 * F.l1_loss(g_ab(b), b))
        loss.backward()
        opt_g.step()
        d_a.requires_grad_(True)
        d_b.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        old_a, old_b = pool_a.query(fake_a.detach()), pool_b.query(fake_b.detach())
        loss_d = 0.5 * (mse(d_a(a), 1.0) + mse(d_a(old_a), 0.0) +
                        mse(d_b(b), 1.0) + mse(d_b(old_b), 0.0))
        loss_d.backward()
        opt_d.step()

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
    from ganlab.runtime import flush_denormals

    flush_denormals()  # as ganlab's runner does: the overhead compares like with like
    spec = json.loads(spec_json)
    cfg = compose(spec["overrides"])
    OmegaConf.update(cfg, "data_dir", spec["data_dir"])
    device = torch.device(cfg.device)
    print(bare(CASES[spec["case"]][1], cfg, device, spec["steps"], spec["warmup"]))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        bare_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies every case's number of steps (GPU: try 10)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved measurements of each; the medians are compared")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args()
    names = list(dict.fromkeys(args.only.split(","))) if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-"))
    device = torch.device(args.device)
    rows = []
    print(f"{'case':<11} {'batch':>5} {'steps':>5} {'runner img/s':>13} {'bare img/s':>11} "
          f"{'overhead':>9}")
    for name in names:
        overrides, _, steps = CASES[name]
        batch = FIXED_BATCH.get(name, args.batch_size)
        total = max(25, round(steps * args.scale))
        warmup = min(WARMUP_STEPS, total // 5)
        common = [*overrides, f"trainer.batch_size={batch}",
                  f"trainer.max_steps={total}", f"device={args.device}", "eval.every=0"]
        # interleaved repeats, medians: a shared VM's speed drifts by tens of percent
        bare_rates, runner_rates = [], []
        for i in range(args.repeat):
            bare_rates.append(bare_in_fresh_process(name, common, work, total - warmup, warmup))
            runner_rates.append(runner(common, work, f"{name}-{i}"))
        bare_rate, runner_rate = statistics.median(bare_rates), statistics.median(runner_rates)
        # real images per step (d_steps is 1 in every case)
        images = batch * IMAGES_PER_EXAMPLE.get(name, 1)
        row = {"case": name, "batch": batch, "steps": total, "runner_images_per_s":
               runner_rate * images, "bare_images_per_s": bare_rate * images,
               "overhead": bare_rate / runner_rate - 1,
               "runner_steps_per_s_each": runner_rates, "bare_steps_per_s_each": bare_rates}
        rows.append(row)
        print(f"{name:<11} {batch:>5} {total:>5} {row['runner_images_per_s']:>13.1f} "
              f"{row['bare_images_per_s']:>11.1f} {row['overhead']:>8.1%}", flush=True)
    Path(args.out).write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                          "threads": torch.get_num_threads(), "rows": rows},
                                         indent=2))
    print(f"wrote {args.out}; runs in {work}")


if __name__ == "__main__":
    main()
