"""`python -m ganlab report DIR [sort=KEY] [descending=true|false] [out=DIR]`: compare a sweep.

One row per run dir under DIR (a dir holding `.hydra/overrides.yaml`): the overrides that differ
between runs, whether the run finished, and its final metrics.json numbers, best run first by
the primary metric (ganlab.metrics.PRIMARY_METRICS). Prints an aligned table and writes
report.csv (full precision, full error messages) and report.md into out (default: DIR).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.metrics import PRIMARY_METRICS, primary_metric

USAGE = "python -m ganlab report DIR [sort=KEY] [descending=true|false] [out=DIR]"
STATUS_WIDTH = 80  # an error message longer than this is cut in the printed/Markdown table
RUNNING = "running-or-missing"
# the line train.py writes into train.log when a job fails: "[...][ganlab][ERROR] - error: ..."
ERROR_LINE = re.compile(r"(?:^|\s)error: (.+)$")


@dataclass
class ReportConfig:
    sort: str | None = None  # column to sort by (default: the primary metric)
    descending: bool | None = None  # default: best first for primary metrics, else ascending
    out: str | None = None  # where report.csv / report.md go (default: the sweep dir)


@dataclass
class Run:
    name: str  # path relative to the sweep dir
    overrides: dict[str, str]
    metrics: dict[str, int | float]  # numeric entries of metrics.json only
    error: str | None = None  # from train.log, when the job failed
    finished: bool = False  # metrics.json present

    @property
    def status(self) -> str:
        if self.finished:
            return "ok"
        return f"failed: {self.error}" if self.error is not None else RUNNING


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]  # column -> str | int | float | None (None: blank)
    numeric: set[str]  # metric columns: right-aligned, formatted with :.4g
    common: dict[str, str]  # overrides every run shares
    sort_by: str
    descending: bool
    counts: dict[str, int] = field(default_factory=dict)


def parse(args: list[str]) -> tuple[Path, ReportConfig]:
    """Split DIR from the key=value options; errors name the offending argument."""
    # a dir whose name has "=" in it still counts as the dir when it exists
    at = [i for i, a in enumerate(args) if "=" not in a or (i == 0 and Path(a).is_dir())]
    if not at:
        raise UserError(f"report needs a sweep dir: {USAGE}")
    if len(at) > 1:
        extra = " ".join(repr(args[i]) for i in at[1:])
        raise UserError(f"report takes one dir and key=value options, got extra {extra}")
    options = args[: at[0]] + args[at[0] + 1:]
    cfg: ReportConfig = OmegaConf.to_object(  # type: ignore[assignment]
        parse_options(ReportConfig, options, "report"))
    root = Path(args[at[0]]).expanduser()
    if not root.is_dir():
        kind = "is not a directory" if root.exists() else "does not exist"
        raise UserError(f"report: {root} {kind}")
    return root, cfg


def natural_key(path: str) -> tuple[tuple[Any, ...], ...]:
    """Order "2" before "10" within every path component (re.split puts digits at odd places,
    so the tuples never compare an int with a str)."""
    return tuple(tuple(int(c) if i % 2 else c for i, c in enumerate(re.split(r"(\d+)", part)))
                 for part in Path(path).parts)


def find_runs(root: Path) -> list[Path]:
    dirs = {p.parent.parent for p in root.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    return sorted(dirs, key=lambda d: natural_key(d.relative_to(root).as_posix()))


def read_overrides(path: Path) -> dict[str, str]:
    """`+key=value` and `key=value` -> {key: value}, as Hydra recorded them (text)."""
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"report: cannot read {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(items, list):
        raise UserError(f"report: {path} is not a list of overrides")
    out: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+")] = value
    return out


def read_error(log_path: Path) -> str | None:
    """The first `error: ...` message train.py logged, or None."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = ERROR_LINE.search(line)
        if match:
            return match.group(1).strip()
    return None


def read_run(root: Path, run_dir: Path) -> Run:
    name = run_dir.relative_to(root).as_posix()
    run = Run(name, read_overrides(run_dir / ".hydra" / "overrides.yaml"), {})
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as e:
            run.error = f"unreadable metrics.json ({str(e).splitlines()[0]})"
            return run
        if not isinstance(metrics, dict):
            run.error = "metrics.json is not a JSON object"
            return run
        run.finished = True
        run.metrics = {k: v for k, v in metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
    else:
        run.error = read_error(run_dir / "train.log")
    return run


def is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def sort_rows(rows: list[dict[str, Any]], column: str, descending: bool) -> list[dict[str, Any]]:
    """Stable sort by one column, runs without a value last whatever the direction. Override
    values are text: they compare as numbers when every one parses as a number."""
    present = [r for r in rows if not is_missing(r.get(column))]
    absent = [r for r in rows if is_missing(r.get(column))]

    def as_number(value: Any) -> float | None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(number) else number

    numbers = [as_number(r[column]) for r in present]
    if all(n is not None for n in numbers):
        keyed = list(zip(numbers, present, strict=True))
        keyed.sort(key=lambda pair: pair[0], reverse=descending)
    else:
        keyed = [(natural_key(str(r[column])), r) for r in present]
        keyed.sort(key=lambda pair: pair[0], reverse=descending)
    return [r for _, r in keyed] + absent


def build_table(runs: list[Run], cfg: ReportConfig) -> Table:
    keys: list[str] = []  # override keys in the order the runs list them
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    varying = [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]
    common = {k: runs[0].overrides[k] for k in keys if k not in varying}

    primary = next((p for run in runs if (p := primary_metric(run.metrics))), None)
    names = sorted({k for run in runs for k in run.metrics})
    first = [n for n in (primary[0] if primary else None, "step") if n in names]
    metric_columns = first + [n for n in names if n not in first]
    columns = ["run", *varying, "status", *metric_columns]

    rows = [{"run": run.name, **{k: run.overrides.get(k) for k in varying},
             "status": run.status, **{k: run.metrics.get(k) for k in metric_columns}}
            for run in runs]

    directions = dict(PRIMARY_METRICS)
    if cfg.sort is not None:
        if cfg.sort not in columns and cfg.sort not in common:
            raise UserError(f"report: unknown sort key {cfg.sort!r}; columns: "
                            + ", ".join(columns))
        sort_by = cfg.sort
        default_descending = directions.get(sort_by) == "max"
    elif primary is not None:
        sort_by, default_descending = primary[0], primary[1] == "max"
    else:
        sort_by, default_descending = "run", False
    descending = default_descending if cfg.descending is None else cfg.descending
    if sort_by != "run" or descending:  # rows are in natural run order already
        rows = sort_rows(rows, sort_by, descending)

    counts = {"ok": 0, "failed": 0, RUNNING: 0}
    for run in runs:
        counts[run.status.split(":")[0]] += 1
    return Table(columns, rows, set(metric_columns), common, sort_by, descending, counts)


def shorten(text: str, width: int = STATUS_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def display(column: str, value: Any) -> str:
    """A cell as printed: 4 significant digits for floats, error messages cut to 80 chars."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if column == "status" and value.startswith("failed: "):
        return "failed: " + shorten(value[len("failed: "):])
    return str(value)


def format_text(table: Table) -> str:
    cells = [[display(c, row[c]) for c in table.columns] for row in table.rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells])
              for i, c in enumerate(table.columns)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if c in table.numeric else v.ljust(w)
                 for c, v, w in zip(table.columns, values, widths, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(table.columns), line(["-" * w for w in widths])]
    out += [line(values) for values in cells]
    return "\n".join(out)


def format_markdown(table: Table, root: Path) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    head = [f"Sweep `{root}`: {summary(table)}", ""]
    if table.common:
        head += [f"common: `{common_text(table)}`", ""]
    head += [sort_text(table), ""]
    rows = [
        "| " + " | ".join(cell(c) for c in table.columns) + " |",
        "| " + " | ".join("---:" if c in table.numeric else "---" for c in table.columns) + " |",
    ]
    rows += ["| " + " | ".join(cell(display(c, row[c])) for c in table.columns) + " |"
             for row in table.rows]
    return "\n".join(head + rows) + "\n"


def write_csv(table: Table, path: Path) -> None:
    """Every cell unrounded (csv writes floats with repr), blanks for missing values."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow(["" if row[c] is None else row[c] for c in table.columns])


def summary(table: Table) -> str:
    parts = ", ".join(f"{n} {status}" for status, n in table.counts.items() if n)
    return f"{len(table.rows)} runs ({parts})"


def common_text(table: Table) -> str:
    return " ".join(f"{k}={v}" for k, v in table.common.items())


def sort_text(table: Table) -> str:
    direction = "descending" if table.descending else "ascending"
    text = f"sorted by {table.sort_by}, {direction}"
    missing = sum(is_missing(row.get(table.sort_by)) for row in table.rows)
    return text + (f"; {missing} run(s) without it last" if missing else "")


def main(args: list[str]) -> None:
    root, cfg = parse(args)
    run_dirs = find_runs(root)
    if not run_dirs:
        raise UserError(f"report: no run dirs (with .hydra/overrides.yaml) under {root}")
    table = build_table([read_run(root, d) for d in run_dirs], cfg)

    out = Path(cfg.out).expanduser() if cfg.out is not None else root
    csv_path, md_path = out / "report.csv", out / "report.md"
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(table, csv_path)
        md_path.write_text(format_markdown(table, root))
    except OSError as e:
        raise UserError(f"report: cannot write to {out}: {e.strerror or e}") from e

    print(f"{root}: {summary(table)}")
    if table.common:
        print(f"common: {common_text(table)}")
    print(sort_text(table))
    print()
    print(format_text(table))
    print()
    print(f"wrote {csv_path}")
    print(f"wrote {md_path}")
