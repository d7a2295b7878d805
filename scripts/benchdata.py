"""What the benchmark scripts share: a data_dir holding the official MNIST test split."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the team's copy of the official 10,000-image test split (t10k IDX files)
SHARED_T10K = ROOT.parent / "shared" / "data" / "mnist-t10k"


def with_mnist_test_split(data_dir: Path) -> bool:
    """Copy the shared t10k files into data_dir/MNIST/raw (where ganlab looks for MNIST's test
    split); False when the shared copy is absent (then ganlab holds out 10% instead)."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if not SHARED_T10K.is_dir():
        return False
    for f in SHARED_T10K.glob("t10k-*"):
        if not (raw / f.name).exists():
            shutil.copy(f, raw / f.name)
    return True
