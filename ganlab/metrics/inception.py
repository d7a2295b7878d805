"""FID and KID with the standard Inception network (the TensorFlow FID graph's weights, as
torch-fidelity and torchmetrics use them), on real held-out images.

The weights (about 92 MB) are not bundled: they are read from torch's hub cache, downloaded
there on demand with eval.inception=on, or given with eval.inception_weights=PATH.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ganlab.data.base import InMemoryDataset
from ganlab.errors import UserError
from ganlab.metrics.frechet import feature_stats, frechet_distance, kernel_inception_distance

log = logging.getLogger("ganlab")

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
DOWNLOAD_TIMEOUT_S = 10.0
BATCH = 100
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _download(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(path), progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def weights_path(explicit: str | None, download: bool) -> Path | None:
    """The Inception weights file: eval.inception_weights, else torch's hub cache (downloaded
    there when `download`); None when absent and not to be downloaded."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"eval.inception_weights={explicit} does not exist")
        return path
    path = default_weights_path()
    if path.is_file() or not download:
        return path if path.is_file() else None
    log.info("downloading the Inception weights to %s", path)
    try:
        _download(path)
    except Exception as e:  # offline: URLError, timeouts, HTTP errors
        raise UserError(f"the Inception weights {WEIGHTS_FILE} are not in {path.parent} and "
                        f"could not be downloaded ({type(e).__name__}); place the file from "
                        f"{WEIGHTS_URL} in {path.parent}, or set eval.inception_weights=PATH, "
                        "or eval.inception=off") from e
    return path


class InceptionSpace:
    """Inception pool3 features (2048-d) of fakes against real held-out images."""

    def __init__(self, weights: Path, real: InMemoryDataset, device: torch.device,
                 cache_dir: Path | None = None) -> None:
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(weights))
        except Exception as e:
            raise UserError(f"the Inception weights {weights} could not be read "
                            f"({type(e).__name__}); replace the file") from e
        self.net = self.net.to(device).eval()
        self.device = device
        self.weights = weights
        self.real_source, self.n_real = real.source, len(real)
        self.real_features = self._real_features(real, cache_dir)
        self.real_mu, self.real_sigma = feature_stats(self.real_features)

    @torch.no_grad()
    def features(self, images: torch.Tensor,
                 progress: Callable[[Iterable], Iterable] = iter) -> torch.Tensor:
        """uint8 (N, C, H, W) images, 1 or 3 channels, any size -> (N, 2048) float64."""
        out = []
        for start in progress(range(0, len(images), BATCH)):
            x = images[start : start + BATCH].to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out.append(self.net(x).reshape(len(x), -1).double().cpu())
        return torch.cat(out)

    def _real_features(self, real: InMemoryDataset, cache_dir: Path | None) -> torch.Tensor:
        key = f"{self.weights.name}|{real.source}|{len(real)}|{tuple(real.x.shape)}"
        path = (cache_dir / f"inception_real_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
                if cache_dir is not None else None)
        if path is not None and path.is_file():
            try:
                return torch.load(path, weights_only=True)["features"].double()
            except Exception as e:
                log.warning("cached Inception features %s are unreadable (%s)", path,
                            type(e).__name__)
        log.info("Inception features of %d real held-out images (cached after this)", len(real))
        features = self.features(real.x)
        if path is not None:
            from ganlab.checkpoint import save

            save({"features": features.float()}, path)
        return features

    def measure(self, fakes: torch.Tensor,
                progress: Callable[[Iterable], Iterable] = iter) -> dict:
        features = self.features(fakes, progress)
        mu, sigma = feature_stats(features)
        kid, kid_std = kernel_inception_distance(
            features, self.real_features, KID_SUBSETS, KID_SUBSET_SIZE,
            torch.Generator().manual_seed(0))
        return {
            "fid": frechet_distance(mu, sigma, self.real_mu, self.real_sigma),
            "kid": kid,
            "kid_std": kid_std,
            "inception_backbone": f"InceptionV3 pool3 (2048-d), FID weights {self.weights}, "
                                  "via torchmetrics/torch-fidelity",
            "inception_real_images": self.n_real,
            "inception_fake_images": len(fakes),
            "inception_reference_split": self.real_source,
        }
