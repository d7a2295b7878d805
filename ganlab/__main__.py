"""`python -m ganlab <command> [args]`: dispatch only."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ganlab.errors import EXIT_BAD_INPUT, UserError, fail

USAGE = """usage: python -m ganlab <command> [key=value ...]

commands:
  train    train a model; Hydra overrides, e.g. model=dcgan loss=wgan_gp trainer.max_steps=5000
           (`train --help` lists the config groups, `train --cfg job` prints the config,
           `train -m loss=lsgan,hinge` sweeps)
  sample   draw from a trained model: ckpt=PATH n=N out=FILE.png|FILE.npz [seed=S]
           [interpolate=linear|slerp steps=K] [numbers=true] [label=K (cgan)]
           [arithmetic=[[A indices],[B indices],[C indices]]] (z of A - B + C)
  eval     every metric that applies, on a trained run: run=PATH [ckpt=last|best] [n_samples=N]
           [iwae_k=K] (VAEs: -log p(x) by importance sampling, K samples per image)
  reference  build (or show the cached) reference classifier of the digit metrics:
           dataset=mnist|fashion_mnist [dataset.source=auto|full|bundled] [data_dir=DIR]
           [device=cpu] [steps=N] [force=true]; prints its held-out accuracy, time and path
  fid      FID/KID/precision-recall/IS between two sets: python -m ganlab fid A B, each a
           folder, a samples .npz, a run dir or NAME:train|test [metrics=fid,kid,prdc,is]
           [n=N] [save_stats=FILE.npz] [ref_stats=FILE.npz] [out=FILE.json]
  report   one table for a sweep: python -m ganlab report outputs/multirun/<date>/<time>
  latent   latent arithmetic with a VAE: ckpt=PATH attribute=NAME [alpha=1.5] out=FILE.png;
           or its map: ckpt=PATH map=true [method=auto|tsne|pca] [n_map=2000] out=FILE.png
  translate  apply a trained CycleGAN to images: ckpt=PATH input=DIR|FILE out=DIR
           [direction=AtoB|BtoA] [sheet=FILE.png] [size=N]
  export   one network of a trained run as a file that runs without ganlab, any batch size:
           ckpt=PATH out=FILE.onnx|FILE.pt2 [format=onnx|torch_export] [net=NAME]
           (G; decoder|encoder; model; G_AB|G_BA; the first is the default)
  dream    DeepDream with a classifier: ckpt=RUN|torchvision:NAME layer=NAME [input=IMAGE]
           out=FILE.png [octaves=4 steps=10 step_size=0.01 jitter=16] (weights on disk only)
  attack   attack a trained classifier on held-out data: ckpt=PATH attack=fgsm|ifgsm|pgd|
           transfer|substitute [attack.eps=[0,0.1,0.3]] [attack.targeted=true attack.target=T]
  rollouts random-policy episodes of a game as uint8 frames + actions + rewards + dones:
           env=dodge|<Gymnasium id> episodes=N out=DIR [seed=0 size=64 max_steps=300
           policy=hold|brownian hold=8]
  play     render a learned game (model=gamegan) for scripted actions: ckpt=RUN
           actions=2*8,1*4,0*8 out=FILE.gif|FILE.png [seed=0 compare=true] (the real game beside)
  worldmodel  World Models end to end (rollouts, V, M, C; each stage a train run in OUT):
           env=dodge episodes=N out=DIR [in_dream=true] [vae.KEY=V mdnrnn.KEY=V controller.KEY=V]

Runs go to outputs/<date>/<time> (sweeps: outputs/multirun/...); view them with
`tensorboard --logdir outputs`.
"""


def is_multirun(hydra_args: list[str]) -> bool:
    return any(a in ("-m", "--multirun") or a.replace(" ", "") == "hydra.mode=MULTIRUN"
               for a in hydra_args)


def run_train(args: list[str]) -> None:
    from ganlab import preflight, sweep, train

    hydra_args = preflight.prepare_train_args(args)
    if is_multirun(hydra_args):
        # tells this process where the sweep's job dirs are, whatever the launcher
        hydra_args = [*hydra_args, sweep.CALLBACK]
    sys.argv = [sys.argv[0], *hydra_args]
    launch = sweep.LAUNCH
    launch.start()
    try:
        train.main()
    except SystemExit as e:
        started = launch.task_started or launch.dir is not None
        # Hydra reports config errors itself and exits 1: for ganlab that is bad input
        if e.code == 1 and not started:
            raise SystemExit(EXIT_BAD_INPUT) from e
        if e.code == 1 and launch.dir is not None:
            # a job crashed (Hydra printed its exception) or its launcher gave up on it: say
            # which jobs did not finish, and where their logs are, before exiting 1 (a bug)
            failed = launch.failures()
            if failed:
                print(f"error: {_failed_text(failed, launch.dir)}", file=sys.stderr,
                      flush=True)
        raise
    failed = launch.failures()
    if failed:
        fail(_failed_text(failed, launch.dir))


def _failed_text(failed: list[str], sweep_dir: Path | None) -> str:
    where = (f" (their train.log in {sweep_dir}; python -m ganlab report {sweep_dir})"
             if sweep_dir is not None else "")
    return f"{len(failed)} sweep job(s) failed: " + "; ".join(failed) + where


# command -> the module whose main(args) runs it, imported only when used (startup stays fast)
COMMANDS = {
    "sample": "ganlab.sample",
    "eval": "ganlab.evaluate",
    "reference": "ganlab.reference_command",
    "fid": "ganlab.fid",
    "report": "ganlab.report",
    "latent": "ganlab.latent",
    "attack": "ganlab.attack",
    "translate": "ganlab.translate",
    "export": "ganlab.export",
    "dream": "ganlab.dream",
    "rollouts": "ganlab.envs.rollouts",
    "worldmodel": "ganlab.worldmodel",
    "play": "ganlab.play",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, args = argv[0], argv[1:]
    try:
        if command == "train":
            run_train(args)
        elif command in COMMANDS:
            importlib.import_module(COMMANDS[command]).main(args)
        else:
            raise UserError(f"unknown command {command!r}; choose one of: train, "
                            f"{', '.join(COMMANDS)}")
    except UserError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
