"""Bit-identity check for refactors: train one tiny run of every family (and the GAN options
that keep state) for 6 steps on the CPU and print a hash of each final checkpoint's family
state. Run it before and after a change; identical lines mean identical weights, optimizer
states and extra state.

    python scripts/fingerprint_runs.py > before.txt   # on the old commit
    python scripts/fingerprint_runs.py > after.txt    # on the new one; diff the two

(2026-11-30, moving model settings under model.*: all 14 lines identical; the old keys were
gan.*/vae.*/classifier.*/cyclegan.* and loss=wgan_gp for today's experiment=wgan_gp.)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

COMMON = ["dataset=synthetic", "dataset.n_samples=64", "trainer.batch_size=16",
          "trainer.max_steps=6", "log.every=1", "log.sample_every=3", "log.n_samples=16",
          "trainer.ckpt_every=3", "log.progress=false", "device=cpu", "trainer.keep_last=0",
          "eval.every=0"]
SMALL_DCGAN = ["model=dcgan", "model.g_features=8", "model.d_features=8"]
CASES = {
    "dcgan": SMALL_DCGAN,
    "dcgan_tools": [*SMALL_DCGAN, "model.ema=0.999", "model.history=8",
                    "model.instance_noise=0.1", "model.minibatch_std=true",
                    "model.spectral_norm=true"],
    "dcgan_wgangp": [*SMALL_DCGAN, "experiment=wgan_gp"],
    "dcgan_fp16": [*SMALL_DCGAN, "trainer.precision=16"],
    "mlp_gan_ring": ["model=mlp_gan", "dataset=ring", "dataset.n_samples=64"],
    "cgan": ["model=cgan", "model.g_features=8", "model.d_features=8"],
    "progan": ["model=progan", "model.max_features=8", "model.min_features=4",
               "model.latent_dim=8", "dataset.image_size=16"],
    "ae": ["model=ae"],
    "vae": ["model=vae"],
    "conv_vae": ["model=conv_vae", "model.features=4", "dataset.image_size=32",
                 "dataset.channels=3"],
    "lenet_fgsm": ["model=lenet", "defense=fgsm", "model.channels=[4,8]", "model.hidden=[16]"],
    "mlp_pgd": ["model=mlp", "defense=pgd", "defense.steps=3", "model.hidden=[16]"],
    "softmax_mixup": ["model=softmax", "defense=mixup", "model.lr=0.01"],
    "cyclegan": ["model=cyclegan", "model.g_features=8", "model.d_features=8",
                 "dataset=red2blue", "dataset.n_samples=16", "dataset.n_test=4",
                 "trainer.batch_size=2"],
}


def fingerprint(state) -> str:
    digest = hashlib.sha256()

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(f"{prefix}.{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{prefix}[{i}]", item)
        elif isinstance(value, torch.Tensor):
            digest.update(prefix.encode())
            if value.numel():
                digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8)
                              .numpy().tobytes())
        else:
            digest.update(f"{prefix}={value!r}".encode())

    walk("family", state)
    return digest.hexdigest()[:16]


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "GANLAB_DATA": str(Path(work) / "data")}
        for name, args in CASES.items():
            run = Path(work) / name
            result = subprocess.run([sys.executable, "-m", "ganlab", "train", *COMMON, *args,
                                     f"hydra.run.dir={run}"], env=env, capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                print(f"{name} FAILED: {result.stderr.strip().splitlines()[-1]}")
                continue
            state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            print(name, state["step"], fingerprint(state["family"]), flush=True)


if __name__ == "__main__":
    main()
