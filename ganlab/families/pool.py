"""A history of generated images for the discriminator (Shrivastava et al. 2017).

Each new fake enters the pool; once the pool is full, each new fake is, with probability 1/2,
swapped for a random stored one, which the discriminator sees instead. The discriminator so
keeps seeing the generator's past modes, which damps oscillation. CycleGAN keeps one pool of 50
per discriminator; the GAN family's `model.history` uses the same class.
"""

from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int, swap_probability: float = 0.5) -> None:
        self.size = size
        self.swap_probability = swap_probability
        self.images: torch.Tensor | None = None  # (size, ...) storage, filled from the front
        self.count = 0

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """The batch the discriminator should see for this batch of (detached) fakes."""
        if self.size == 0:
            return images
        if self.images is None:
            self.images = images.new_empty((self.size, *images.shape[1:]))
        # decisions on the CPU generator: python ints, no device sync; drawn for every image
        # so the random stream does not depend on how full the pool is
        swaps = (torch.rand(len(images)) < self.swap_probability).tolist()
        slots = torch.randint(0, self.size, (len(images),)).tolist()
        out = images.clone()
        for i, (swap, slot) in enumerate(zip(swaps, slots, strict=True)):
            if self.count < self.size:  # filling up: keep it, show it
                self.images[self.count] = images[i]
                self.count += 1
            elif swap:  # show an old fake, keep the new one in its place
                out[i] = self.images[slot]
                self.images[slot] = images[i]
        return out

    def state_dict(self) -> dict:
        stored = self.images[: self.count] if self.images is not None else torch.empty(0)
        return {"size": self.size, "images": stored.clone()}

    def load_state_dict(self, state: dict, device: torch.device | None = None) -> None:
        stored = state["images"].to(device) if device is not None else state["images"]
        if state["size"] != self.size:
            raise ValueError(f"image pool of size {state['size']} in the checkpoint, "
                             f"{self.size} configured")
        self.count = len(stored)
        self.images = None
        if self.count:
            self.images = stored.new_empty((self.size, *stored.shape[1:]))
            self.images[: self.count] = stored
