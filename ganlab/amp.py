"""Mixed precision for the families' training steps (trainer.precision=32|bf16|16).

The loop runs each train_step under `autocast()`; a family calls `backward(loss)` and
`step(optimizer)` instead of `loss.backward()` and `optimizer.step()`, so fp16's loss scaling
(a GradScaler: fp16 gradients underflow without it) needs no code of its own in a family, and
bf16 or fp32 pass straight through. Checkpoints hold fp32 weights whatever the precision.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class Amp:
    def __init__(self, precision: str = "32", device_type: str = "cpu") -> None:
        if precision not in DTYPES:
            from ganlab.errors import UserError

            raise UserError(f"trainer.precision={precision} is not one of: "
                            f"{', '.join(DTYPES)}")
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.device_type = device_type
        self.scaler = (torch.amp.GradScaler(device_type) if precision == "16" else None)

    def autocast(self):
        """The context a training step runs in (a no-op at fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients in true units before reading them (grad norms); at most once per step."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped when the gradients overflowed
        else:
            optimizer.step()

    def update(self) -> None:
        """After each training step: fp16 adapts its loss scale."""
        if self.scaler is not None:
            self.scaler.update()


FP32 = Amp()  # what a family uses until the loop hands it another
