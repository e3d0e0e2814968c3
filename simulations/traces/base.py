"""What every trace loader returns: jobs, nodes, and an account of the rows it read.

A loader reads one file row by row. A row it cannot use raises `TraceError` naming the file
and the line (1-based, as an editor shows it), unless the caller asked to skip bad rows
(`on_error="skip"`): then the row is counted in the `LoadReport` with its reason, and the
report travels into the simulation report so nobody mistakes a partial replay for a full one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

OnError = Literal["raise", "skip"]
MAX_PROBLEMS_KEPT = 20  # skipped rows listed in a report; the count covers all of them


class TraceError(ValueError):
    """A trace file that cannot be read as asked; names the file and line."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace, in the trace's own terms (times are Unix seconds)."""

    id: str  # unique within the trace; points back to the file (e.g. philly-L1234)
    submit_at: float
    duration_s: float  # measured runtime, on `measured_on` (or the trace's GPU model when empty)
    gpus: int  # 0 = CPU only
    gpu_milli: int = 1000  # share of each GPU, < 1000 only for one shared GPU
    gpu_models: tuple[str, ...] = ()  # allowed GPU models; empty = any
    cpus: float = 0.0
    memory_gb: float = 0.0
    group: str = ""  # Philly virtual cluster, openb QoS class, generic `group`
    measured_on: str = ""
    single_node: bool | None = None  # None: the workload decides (gang when it fits a node)
    kind: str = "training"
    priority: int = 0
    deadline_at: float | None = None
    datasets: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One machine of a trace's cluster."""

    name: str
    gpus: int
    gpu_model: str  # "" for a CPU-only node
    cpu_milli: int = 0  # 0 = not recorded
    memory_mib: int = 0
    group: str = ""  # Philly virtual cluster


@dataclass
class LoadReport:
    """How a trace file was read: rows seen, used, skipped (with reasons), dropped as duplicates."""

    source: str
    rows: int = 0
    loaded: int = 0
    skipped: int = 0
    duplicates_dropped: int = 0
    blank_lines: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS_KEPT skipped rows

    def skip(self, line: int, message: str) -> None:
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(f"{self.source}:{line}: {message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rows": self.rows,
            "loaded": self.loaded,
            "skipped": self.skipped,
            "duplicates_dropped": self.duplicates_dropped,
            "blank_lines": self.blank_lines,
            "notes": list(self.notes),
            "problems": list(self.problems),
        }


class RowError(ValueError):
    """A bad field in the current row (the reader adds file and line)."""


@dataclass(frozen=True)
class Row:
    line: int
    values: Mapping[str, str]
    raw: tuple[str, ...]
    problem: str = ""  # set when the row cannot even be split into the header's columns

    def check(self) -> None:
        if self.problem:
            raise RowError(self.problem)

    def text(self, name: str, *, required: bool = True) -> str:
        value = self.values.get(name, "").strip()
        if required and not value:
            raise RowError(f"{name}: missing value")
        return value

    def number(self, name: str, *, minimum: float | None = None, default: float | None = None) -> float:
        value = self.values.get(name, "").strip()
        if not value:
            if default is not None:
                return default
            raise RowError(f"{name}: missing value")
        try:
            x = float(value)
        except ValueError:
            raise RowError(f"{name}: {value!r} is not a number") from None
        if not math.isfinite(x):
            raise RowError(f"{name}: {value!r} is not a finite number")
        if minimum is not None and x < minimum:
            raise RowError(f"{name}: {value!r} is below {minimum:g}")
        return x

    def integer(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None, default: int | None = None
    ) -> int:
        value = self.values.get(name, "").strip()
        if not value:
            if default is not None:
                return default
            raise RowError(f"{name}: missing value")
        try:
            x = int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise RowError(f"{name}: {value!r} is not an integer") from None
            if not f.is_integer():
                raise RowError(f"{name}: {value!r} is not an integer") from None
            x = int(f)
        if minimum is not None and x < minimum:
            raise RowError(f"{name}: {value!r} is below {minimum}")
        if maximum is not None and x > maximum:
            raise RowError(f"{name}: {value!r} is above {maximum}")
        return x


def read_rows(
    path: Path,
    required: Sequence[str],
    report: LoadReport,
    *,
    optional: Sequence[str] = (),
    open_ended: bool = False,
) -> Iterator[Row]:
    """Rows of a CSV file with a header; checks the header names `required` columns.

    Blank lines are counted and passed over (the Philly file ends with one). A row with the
    wrong number of fields is a RowError like any other bad field. Unknown columns are an error
    unless `open_ended` (the generic format's tag_* columns).
    """
    source = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(source, 0, f"cannot read: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceError(source, 1, "empty file: expected a header row") from None
        except csv.Error as exc:
            raise TraceError(source, 1, f"bad CSV: {exc}") from None
        header = [h.strip() for h in header]
        for name in required:
            if name not in header:
                raise TraceError(source, 1, f"missing column {name!r} (have: {', '.join(header)})")
        known = set(required) | set(optional)
        if not open_ended:
            for name in header:
                if name not in known:
                    raise TraceError(
                        source, 1, f"unknown column {name!r} (expected: {', '.join([*required, *optional])})"
                    )
        if len(set(header)) != len(header):
            raise TraceError(source, 1, "duplicate column names in the header")
        while True:
            try:
                raw = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise TraceError(source, reader.line_num, f"bad CSV: {exc}") from None
            line = reader.line_num
            if not raw or all(not x.strip() for x in raw):
                report.blank_lines += 1
                continue
            report.rows += 1
            if len(raw) != len(header):
                yield Row(line, {}, tuple(raw), f"expected {len(header)} fields, found {len(raw)}")
                continue
            yield Row(line, dict(zip(header, raw, strict=True)), tuple(raw))


def fail_or_skip(report: LoadReport, on_error: OnError, line: int, message: str) -> None:
    if on_error == "raise":
        raise TraceError(report.source, line, message)
    report.skip(line, message)
