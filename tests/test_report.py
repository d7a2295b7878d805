"""`report` on a hand-built Hydra multirun tree: columns, ranking, files, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import make_job

from ganlab import report
from ganlab.errors import UserError

LOSSES = ("lsgan", "hinge", "wgan_gp")
# job -> classifier_fid; job 2 reports modes_covered instead, 9 is still running, 10 failed
FID = {0: 30.5, 1: 12.3456789, 3: 8.125, 4: 40.0, 5: 19.0, 6: 5.5, 7: 22.75, 8: 15.0}
ERROR = ("non-finite loss at step 42 (loss/D=nan, grad_norm/D=nan, D/real=0.3455, "
         "D/fake=nan, loss/G=nan, grad_norm/G=nan)")
COLUMNS = ["run", "loss", "status", "classifier_fid", "step", "loss/D", "modes_covered",
           "steps_per_second"]
BY_FID = ["6", "3", "1", "8", "5", "7", "0", "4", "2", "9", "10"]  # unranked runs last, 9 < 10


def log_line(level: str, message: str) -> str:
    return f"[2026-01-01 12:00:00,000][ganlab][{level}] - {message}\n"


DATA = log_line("INFO", "data: mnist")  # the first line of every job's train.log here


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """11 jobs, loss=lsgan|hinge|wgan_gp by job number, trainer.max_steps=100 everywhere."""
    root = tmp_path / "outputs" / "multirun" / "2026-01-01" / "12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    for num in range(11):
        overrides = [f"loss={LOSSES[num % 3]}", "trainer.max_steps=100", "dataset=mnist"]
        metrics: dict | None = {"step": 50 + 5 * num, "steps_per_second": 10.0 + num,
                                "loss/D": 1.0 / (num + 1), "heldout_data": "mnist test split"}
        log = ""
        if num in FID:
            metrics["classifier_fid"] = FID[num]
        elif num == 2:
            metrics["modes_covered"] = 7
        elif num == 9:
            metrics = None  # no metrics.json, no error: still running (or killed)
        else:
            metrics = None
            log = log_line("ERROR", f"error: {ERROR}")
            log += log_line("ERROR", f"error: {ERROR}; the sweep goes on")
        make_job(root, num, overrides, metrics, DATA + log)
    return root


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def printed_runs(out: str) -> list[str]:
    """The run column of the printed table, top to bottom."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    end = lines.index("", start)
    return [line.split()[0] for line in lines[start:end]]


def test_default_report_ranks_by_primary_metric(sweep, capsys):
    report.main([str(sweep)])
    out = capsys.readouterr().out

    rows = read_csv(sweep / "report.csv")
    assert rows[0] == COLUMNS  # heldout_data (text) and common overrides are not columns
    assert [r[0] for r in rows[1:]] == BY_FID
    assert printed_runs(out) == BY_FID
    assert "sorted by classifier_fid, ascending" in out
    assert "common: trainer.max_steps=100 dataset=mnist" in out

    by_run = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in rows[1:]}
    assert by_run["1"] == {"run": "1", "loss": "hinge", "status": "ok",
                           "classifier_fid": "12.3456789", "step": "55", "loss/D": "0.5",
                           "modes_covered": "", "steps_per_second": "11.0"}
    assert by_run["2"]["modes_covered"] == "7" and by_run["2"]["classifier_fid"] == ""
    assert by_run["9"]["status"] == "running-or-missing" and by_run["9"]["step"] == ""
    assert by_run["10"]["status"] == f"failed: {ERROR}"  # the CSV keeps the whole message
    # the printed table rounds to 4 significant digits and cuts the error to 80 characters
    assert "12.35" in out and "12.3456789" not in out
    assert f"failed: {ERROR[:77]}..." in out and ERROR not in out
    assert f"wrote {sweep / 'report.csv'}" in out and f"wrote {sweep / 'report.md'}" in out


def test_markdown_table(sweep):
    report.main([str(sweep)])
    lines = (sweep / "report.md").read_text().splitlines()
    header = "| " + " | ".join(COLUMNS) + " |"
    assert header in lines
    at = lines.index(header)
    assert lines[at + 1] == "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
    table = lines[at + 2:]
    assert len(table) == 11
    assert table[0] == "| 6 | lsgan | ok | 5.5 | 80 | 0.1429 |  | 16 |"
    assert table[-1].startswith(f"| 10 | hinge | failed: {ERROR[:40]}")
    assert "common: `trainer.max_steps=100 dataset=mnist`" in lines


def test_sort_by_metric_descending(sweep, capsys):
    report.main([str(sweep), "sort=step", "descending=true"])
    out = capsys.readouterr().out
    expected = ["8", "7", "6", "5", "4", "3", "2", "1", "0", "9", "10"]
    assert [r[0] for r in read_csv(sweep / "report.csv")[1:]] == expected
    assert printed_runs(out) == expected
    assert "sorted by step, descending" in out


def test_sort_by_override_keeps_natural_order_within_ties(sweep, capsys):
    report.main([str(sweep), "sort=loss"])
    expected = ["1", "4", "7", "10", "0", "3", "6", "9", "2", "5", "8"]
    assert printed_runs(capsys.readouterr().out) == expected


def test_sort_by_run_is_natural(sweep, capsys):
    report.main([str(sweep), "sort=run"])
    assert printed_runs(capsys.readouterr().out) == [str(n) for n in range(11)]


def test_out_dir_and_direction_of_a_max_metric(tmp_path, capsys):
    """The primary metric comes from the first run that has one; modes_covered: more is
    better, so the default order is descending."""
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["loss=hinge"], None, DATA + log_line("ERROR", "error: data missing"))
    for num, modes in ((1, 5), (2, 8), (3, 6)):
        make_job(sweep, num, ["loss=lsgan", f"trainer.seed={num}"], {"modes_covered": modes},
                 DATA)
    out_dir = tmp_path / "reports" / "toy"
    report.main([str(sweep), f"out={out_dir}"])
    out = capsys.readouterr().out
    assert printed_runs(out) == ["2", "3", "1", "0"]
    assert "sorted by modes_covered, descending" in out
    assert "failed: data missing" in out
    assert "common:" not in out  # each key has different values, or is missing somewhere
    assert read_csv(out_dir / "report.csv")[0] == ["run", "loss", "trainer.seed", "status",
                                                   "modes_covered"]
    assert (out_dir / "report.md").is_file() and not (sweep / "report.csv").exists()


def test_unknown_sort_key_lists_columns(sweep):
    with pytest.raises(UserError, match=r"unknown sort key 'fidd'; columns: run, loss, status, "
                                        r"classifier_fid, step"):
        report.main([str(sweep), "sort=fidd"])
    assert not (sweep / "report.csv").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "report needs a sweep dir"),
        (["sort=step"], "report needs a sweep dir"),
        (["{sweep}", "other"], "got extra 'other'"),
        (["{sweep}", "sortt=step"], "sortt"),
        (["{sweep}", "descending=maybe"], "descending"),
    ],
)
def test_bad_arguments(sweep, args, message):
    with pytest.raises(UserError, match=message) as info:
        report.main([a.format(sweep=sweep) for a in args])
    assert "\n" not in str(info.value)


def test_missing_dir(tmp_path):
    with pytest.raises(UserError, match=r"nowhere does not exist"):
        report.main([str(tmp_path / "nowhere")])


def test_tree_without_runs(tmp_path):
    (tmp_path / "empty" / "0").mkdir(parents=True)
    (tmp_path / "empty" / "0" / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="no run dirs"):
        report.main([str(tmp_path / "empty")])
