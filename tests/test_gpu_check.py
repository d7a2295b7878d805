"""scripts/gpu_check.py, the check for whoever gets a GPU, run here as `--device cpu --quick`:
one report entry per case, every case that runs here ok with finite losses, the table written,
and a failing case recorded as failed (with its error line) without stopping the others."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    """The script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


# every kind of case, with two model families: each family's own CPU training is tested in
# its tests and tests/test_resume.py, so running all of them here again would only cost CI time
SAMPLED = ("dcgan-fp32", "dcgan-bf16", "dcgan-bf16-compile", "vae-fp32", "lenet-bf16",
           "data-on-device", "data-streamed-mmap", "data-streamed-host", "dist-probe",
           "torchrun-1proc", "torchrun-1proc-sync_batchnorm", "bench-dcgan-64-fp32",
           "bench-dcgan-64-bf16", "bench-dcgan-64-bf16-compile")


@pytest.fixture(scope="module")
def quick(gpu_check, tmp_path_factory):
    """One `--device cpu --quick` run of the sampled cases: (out dir, exit code, report)."""
    out = tmp_path_factory.mktemp("gpu_check")
    code = gpu_check.main(["--device", "cpu", "--quick", "--out-dir", str(out),
                           "--only", ",".join(SAMPLED)])
    return out, code, json.loads((out / "report.json").read_text())


def test_every_model_has_its_cases(gpu_check):
    names = {c.name for c in gpu_check.build_cases("cpu", quick=True)}
    models = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
    for model in models:  # a model added to conf/model/ needs its cases here
        assert {f"{model}-fp32", f"{model}-bf16"} <= names, model
    assert set(SAMPLED) <= names


def test_the_quick_check_runs_each_kind_of_case_here(quick):
    out, code, report = quick
    names = [r["name"] for r in report["cases"]]
    assert names == list(SAMPLED)

    by_name = {r["name"]: r for r in report["cases"]}
    skipped = {n for n, r in by_name.items() if r["status"] == "skipped"}
    # here: the bench, compile, the NCCL/gloo probe and SyncBatchNorm (CUDA only)
    assert skipped == {n for n in names if n.startswith(("bench-", "dist-probe"))
                       or n.endswith(("-compile", "sync_batchnorm"))}
    assert all(by_name[n]["reason"] for n in skipped)

    for name, record in by_name.items():
        if name in skipped:
            continue
        assert record["status"] == "ok", record
        assert record["wall_s"] > 0
        if record["kind"] in ("train", "torchrun"):
            assert record["losses"] and record["losses_finite"], record
            assert all(math.isfinite(v) for v in record["losses"].values())
            assert record["steps_per_second"] > 0 and record["step"] == 3
            assert (Path(record["run_dir"]) / "checkpoints" / "last.pt").is_file()
    assert code == 0
    # the streamed path (data.max_device_bytes=0) draws the on-device path's batches
    assert by_name["data-streamed-mmap"]["same_losses_as_on_device"] is True
    for name in ("data-streamed-mmap", "data-streamed-host"):
        log = Path(by_name[name]["log"]).read_text()
        assert "streamed from " + ("a memory map" if "mmap" in name else "host memory") in log

    table = (out / "report.md").read_text()
    assert table.count("\n| ") == len(names) + 2  # header, separator, one row per case
    assert all(f"| {name} |" in table for name in names)
    assert report["summary"]["skipped"] == len(skipped)


def test_a_failing_case_is_recorded_and_the_others_still_run(gpu_check, tmp_path, capsys):
    # loss= is a setting of the GANs only: model=vae refuses it, dcgan takes it
    code = gpu_check.main(["--device", "cpu", "--quick", "--out-dir", str(tmp_path),
                           "--only", "vae-fp32,dcgan-fp32", "--extra-override", "loss=hinge"])
    assert code == 1
    report = json.loads((tmp_path / "report.json").read_text())
    vae, dcgan = report["cases"]
    assert vae["name"] == "vae-fp32" and vae["status"] == "failed"
    assert vae["error"].startswith("error: ") and "loss" in vae["error"], vae
    assert "losses" not in vae
    assert dcgan["name"] == "dcgan-fp32" and dcgan["status"] == "ok", dcgan
    assert report["summary"] == {"ok": 1, "failed": 1, "skipped": 0}
    assert "| vae-fp32 | failed |" in (tmp_path / "report.md").read_text()
    assert "1 ok, 1 failed, 0 skipped" in capsys.readouterr().out


def test_unknown_case_names_are_refused(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--out-dir", str(tmp_path),
                           "--only", "dcgan-fp32,nope"]) == 2
    assert "unknown case(s) nope" in capsys.readouterr().err
