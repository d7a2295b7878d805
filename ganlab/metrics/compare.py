"""Two image sets compared in one network's feature space: FID, KID, precision/recall/density/
coverage and the Inception Score, from features (or from saved mean/covariance statistics).

The sample metrics of training, `eval` and the `fid` command all go through `compare`, so a
number means the same thing wherever it was printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ganlab.errors import UserError
from ganlab.metrics.frechet import feature_stats, frechet_distance, kernel_inception_distance

METRICS = ("fid", "kid", "prdc", "is")
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # torch-fidelity's and torchmetrics' defaults
PRDC_K = 5  # Naeem et al. 2020's default
IS_SPLITS = 10  # Salimans et al. 2016
IS_SHUFFLE_SEED = 2020  # torch-fidelity's


@dataclass
class FeatureSet:
    """One image set in a feature space: its features (None when only statistics were read
    from a file), its class probabilities when the network has a classifier head, and its
    mean and covariance (computed on first use)."""

    features: torch.Tensor | None
    probs: torch.Tensor | None = None
    n: int = 0
    _stats: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, features: torch.Tensor, probs: torch.Tensor | None = None) -> FeatureSet:
        return cls(features=features, probs=probs, n=len(features))

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stats is None:
            assert self.features is not None
            self._stats = feature_stats(self.features)
        return self._stats

    def save_stats(self, path: Path, about: dict) -> None:
        """mu and sigma as an .npz (clean-fid's custom statistics keep the same two arrays),
        with n and what they were measured with."""
        mu, sigma = self.stats
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, mu=mu, sigma=sigma, n=self.n, **{k: str(v) for k, v in about.items()})

    @classmethod
    def load_stats(cls, path: Path) -> tuple[FeatureSet, dict]:
        """Statistics saved by save_stats (or any .npz with mu (D,) and sigma (D, D)), and
        the other strings stored beside them; a UserError for anything else."""
        try:
            with np.load(path, allow_pickle=False) as blob:
                arrays = {key: blob[key] for key in blob.files}
        except Exception as e:
            raise UserError(f"{path} is not a readable .npz of statistics "
                            f"({type(e).__name__})") from e
        mu, sigma = arrays.get("mu"), arrays.get("sigma")
        if (mu is None or sigma is None or mu.ndim != 1 or sigma.shape != (len(mu), len(mu))
                or not np.isfinite(mu).all() or not np.isfinite(sigma).all()):
            raise UserError(f"{path} does not hold statistics: it needs finite arrays mu (D,) "
                            f"and sigma (D, D); it has {sorted(arrays)}")
        n = int(arrays["n"]) if "n" in arrays else 0
        about = {k: str(v) for k, v in arrays.items() if k not in ("mu", "sigma", "n")}
        stats = (mu.astype(np.float64), sigma.astype(np.float64))
        return cls(features=None, n=n, _stats=stats), about


def compare(fake: FeatureSet, real: FeatureSet, wanted: set[str], *, k: int = PRDC_K,
            seed: int = 0) -> dict[str, float]:
    """The `wanted` metrics (of METRICS) of `fake` against `real`:
    fid; kid_mean, kid_std (100 subsets of up to 1,000, unbiased MMD^2, cubic kernel);
    precision, recall, density, coverage (k-NN balls, k = 5); is_mean, is_std (of `fake`'s
    probabilities, 10 splits). KID and PRDC need both sets' features, IS the fake's
    probabilities: asking for them without is a UserError."""
    unknown = set(wanted) - set(METRICS)
    if unknown:
        raise UserError(f"unknown metrics {sorted(unknown)}; choose from {','.join(METRICS)}")
    out: dict[str, float] = {}
    if "fid" in wanted:
        out["fid"] = frechet_distance(*fake.stats, *real.stats)
    if wanted & {"kid", "prdc"} and (fake.features is None or real.features is None):
        raise UserError("kid and prdc need the images (features) of both sets, not saved "
                        "statistics; ask for metrics=fid with stats files")
    if "kid" in wanted:
        assert fake.features is not None and real.features is not None
        out["kid_mean"], out["kid_std"] = kernel_inception_distance(
            fake.features, real.features, KID_SUBSETS, KID_SUBSET_SIZE,
            torch.Generator().manual_seed(seed))
    if "prdc" in wanted:
        from ganlab.metrics.prdc import prdc

        assert fake.features is not None and real.features is not None
        out.update(prdc(real.features, fake.features, k=k))
    if "is" in wanted:
        from ganlab.metrics.inception_score import inception_score

        if fake.probs is None:
            raise UserError("the Inception Score needs a network with a classifier head")
        # splits are contiguous: shuffled first with a fixed seed (torch-fidelity's 2020), so
        # a set ordered by class (a dataset, a conditional model's samples) is not scored as
        # ten one-class splits (IS 1)
        order = torch.randperm(fake.n, generator=torch.Generator().manual_seed(IS_SHUFFLE_SEED))
        out["is_mean"], out["is_std"] = inception_score(fake.probs[order],
                                                        splits=min(IS_SPLITS, fake.n))
    return out
