"""Mixed precision for the families' training steps (trainer.precision=32|bf16|16).

The loop runs each train_step under `autocast()`; a family calls `backward(loss)` and
`step(optimizer)` instead of `loss.backward()` and `optimizer.step()`, so fp16's loss scaling
(a GradScaler: fp16 gradients underflow without it) needs no code of its own in a family, and
bf16 or fp32 pass straight through. Checkpoints hold fp32 weights whatever the precision.
Under torchrun the same two calls average the gradients over the processes before a step
(ganlab/distributed.py).
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class Amp:
    def __init__(self, precision: str = "32", device_type: str = "cpu", replicas=None) -> None:
        if precision not in DTYPES:
            from ganlab.errors import UserError

            raise UserError(f"trainer.precision={precision} is not one of: "
                            f"{', '.join(DTYPES)}")
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.device_type = device_type
        self.scaler = (torch.amp.GradScaler(device_type) if precision == "16" else None)
        self.replicas = replicas  # a distributed.Replicas under torchrun, else None
        self._averaged: set[int] = set()  # optimizers whose gradients are averaged already

    def _average(self, optimizer: torch.optim.Optimizer) -> None:
        if self.replicas is not None and id(optimizer) not in self._averaged:
            self.replicas.average_gradients(optimizer)
            self._averaged.add(id(optimizer))

    def autocast(self):
        """The context a training step runs in (a no-op at fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients in true units before reading them (grad norms); at most once per step."""
        self._average(optimizer)  # the norm of the gradient the step will apply
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self._average(optimizer)
        self._averaged.discard(id(optimizer))
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped when the gradients overflowed
        else:
            optimizer.step()

    def update(self) -> None:
        """After each training step: fp16 adapts its loss scale."""
        if self.scaler is not None:
            self.scaler.update()



    def state_dict(self) -> dict:
        """fp16's loss scale and its growth tracker (empty otherwise): a resumed run continues
        with the scale it had, not from 2**16 again."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FP32 = Amp()  # what a family uses until the loop hands it another
