"""The wheel carries conf/: an installed ganlab (not the source tree) trains from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_a_built_wheel_trains_from_another_directory(tmp_path):
    # what a clone holds, copied: the build leaves its build/ folder there, not in the repo
    source = tmp_path / "source"
    for name in ("ganlab", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("ganlab-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    assert (site / "ganlab" / "conf" / "model" / "dcgan.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "GANLAB_DATA": str(elsewhere / "data")}
    where = subprocess.run([sys.executable, "-c", "import ganlab, ganlab.config as c; "
                            "print(ganlab.__file__); print(c.CONF_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    package, conf = where.stdout.split()
    assert package.startswith(str(site)) and conf == str(site / "ganlab" / "conf"), where.stdout
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", *TINY, "model=mlp_gan",
                             "hydra.run.dir=run"], check=False, cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (elsewhere / "run" / "checkpoints" / "last.pt").is_file()
