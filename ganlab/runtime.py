"""Process-wide settings ganlab applies before it runs networks."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("ganlab")


def flush_denormals() -> None:
    """Treat denormal floats (below 1.2e-38) as zero on the CPU.

    Flat image regions (CycleGAN's instance norm over a plain background, for one) fill
    activations and gradients with denormals, which x86 CPUs process up to 100x slower: a
    64-px CycleGAN step on 2 cores took 20 s instead of 0.7 s. Numbers that small carry no
    signal in training; GPUs flush them already. A no-op where the CPU cannot."""
    torch.set_flush_denormal(True)


def speed_switches(networks: dict[str, torch.nn.Module], trainer_cfg, device: torch.device,
                   double_backward: set[str]) -> None:
    """trainer.channels_last and trainer.compile, in place: parameters and state-dict keys
    stay as they are, so checkpoints load with or without them. cuDNN picks its fastest
    convolution algorithms on CUDA (trainer.cudnn_benchmark)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(trainer_cfg.cudnn_benchmark)
    if trainer_cfg.channels_last:
        for net in networks.values():
            if any(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
                   for m in net.modules()):
                net.to(memory_format=torch.channels_last)
    if not trainer_cfg.compile:
        return
    skipped = sorted(set(networks) & set(double_backward))
    if skipped:
        # torch.compile's backward cannot itself be differentiated ("does not currently
        # support double backward"): the gradient penalty needs exactly that
        log.warning("trainer.compile: %s left uncompiled: its loss differentiates a gradient "
                    "(gradient penalty), which torch.compile does not support",
                    ", ".join(skipped))
    compiled = [name for name in networks if name not in double_backward]
    # compiled modules share one compiled function, and each network meets it in several
    # states (training and eval, gradients off while the other network steps, the sample
    # batch size): dynamo's default of 8 variants falls back to eager for CycleGAN's four
    from torch._dynamo import config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, 16 * len(compiled))
    for name in compiled:
        networks[name].compile()
    log.info("trainer.compile: %s compiled (the first steps include compile time)",
             ", ".join(compiled) or "nothing")
