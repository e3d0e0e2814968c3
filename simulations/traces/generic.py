"""The generic job trace: a CSV a user maps their own scheduler's history onto.

One row per job, with a header. Required columns:

    job_id        unique id (any text without commas)
    submit_time   Unix seconds (e.g. 1767225600.5) or ISO 8601 (2026-01-01T00:00:00Z;
                  a time without a zone is read in the loader's `timezone`, UTC by default)
    duration_s    measured runtime in seconds, > 0
    gpus          GPUs requested, >= 1

Optional columns (empty cell = default):

    gpu_milli     share of one GPU in thousandths (1-1000, default 1000; < 1000 needs gpus = 1)
    gpu_models    allowed GPU models of the catalog, separated by '|' (default: any)
    measured_on   the GPU model `duration_s` was measured on (default: the scenario's trace GPU)
    cpus          CPUs (default 0)
    memory_gb     memory in GB (default 0)
    single_node   true/false: all GPUs on one node (default: true when they fit on one node)
    kind          training or batch (default training)
    priority      integer tier, higher first (default 0)
    deadline      absolute deadline, same formats as submit_time
    deadline_s    deadline relative to submit_time, in seconds (give deadline or deadline_s)
    group         a grouping key (team, queue, virtual cluster); tags can be derived from it
    datasets      dataset ids of the scenario's catalog, separated by '|'
    tag_<key>     one column per tag, e.g. tag_project, tag_cost_center

Any other column is an error (a misspelt column would silently be ignored otherwise). A
malformed row raises an error naming the file and line, or is skipped and counted when the
scenario says `on_error: skip`. See `simulations/scenarios/data/example_jobs.csv`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from simulations.traces.base import LoadReport, OnError, Row, RowError, TraceJob, fail_or_skip, read_rows
from simulations.traces.philly import zone_of

REQUIRED = ("job_id", "submit_time", "duration_s", "gpus")
OPTIONAL = (
    "gpu_milli",
    "gpu_models",
    "measured_on",
    "cpus",
    "memory_gb",
    "single_node",
    "kind",
    "priority",
    "deadline",
    "deadline_s",
    "group",
    "datasets",
)
KINDS = ("training", "batch")
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


def parse_time(text: str, field: str, zone: dt.tzinfo | None) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise RowError(f"{field}: {text!r} is neither Unix seconds nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone or dt.UTC)
    return moment.timestamp()


def _listed(row: Row, name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in row.text(name, required=False).split("|") if x.strip())


def load_generic_jobs(
    path: str | Path, *, on_error: OnError = "raise", timezone: str = "UTC"
) -> tuple[list[TraceJob], LoadReport]:
    path = Path(path)
    zone = zone_of(timezone)
    report = LoadReport(str(path))
    jobs: list[TraceJob] = []
    ids: set[str] = set()
    for row in read_rows(path, REQUIRED, report, optional=OPTIONAL, open_ended=True):
        try:
            row.check()
            for column in row.values:
                if column not in REQUIRED and column not in OPTIONAL and not column.startswith("tag_"):
                    raise RowError(f"unknown column {column!r} (see simulations/traces/generic.py)")
            job_id = row.text("job_id")
            if job_id in ids:
                raise RowError(f"job_id: {job_id!r} appears twice")
            submit = parse_time(row.text("submit_time"), "submit_time", zone)
            duration = row.number("duration_s")
            if duration <= 0:
                raise RowError(f"duration_s: {duration:g} must be > 0")
            gpus = row.integer("gpus", minimum=1)
            milli = row.integer("gpu_milli", minimum=1, maximum=1000, default=1000)
            if milli < 1000 and gpus != 1:
                raise RowError("gpu_milli: a shared GPU share needs gpus = 1")
            single = row.text("single_node", required=False).lower()
            if single and single not in TRUE + FALSE:
                raise RowError(f"single_node: {single!r} is not true or false")
            kind = row.text("kind", required=False).lower() or "training"
            if kind not in KINDS:
                raise RowError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
            deadline_text = row.text("deadline", required=False)
            relative = row.text("deadline_s", required=False)
            if deadline_text and relative:
                raise RowError("deadline: give deadline or deadline_s, not both")
            deadline = parse_time(deadline_text, "deadline", zone) if deadline_text else None
            if relative:
                deadline = submit + row.number("deadline_s", minimum=0)
            if deadline is not None and deadline <= submit:
                raise RowError("deadline: must be after submit_time")
            tags = {
                column[4:]: value.strip()
                for column, value in row.values.items()
                if column.startswith("tag_") and value.strip()
            }
            if any(not key for key in tags):
                raise RowError("tag_: a tag column needs a key after 'tag_'")
            job = TraceJob(
                id=job_id,
                submit_at=submit,
                duration_s=duration,
                gpus=gpus,
                gpu_milli=milli,
                gpu_models=_listed(row, "gpu_models"),
                cpus=row.number("cpus", minimum=0, default=0.0),
                memory_gb=row.number("memory_gb", minimum=0, default=0.0),
                group=row.text("group", required=False),
                measured_on=row.text("measured_on", required=False),
                single_node=None if not single else single in TRUE,
                kind=kind,
                priority=row.integer("priority", default=0),
                deadline_at=deadline,
                datasets=_listed(row, "datasets"),
                tags=tags,
                line=row.line,
            )
        except RowError as exc:
            fail_or_skip(report, on_error, row.line, str(exc))
            continue
        ids.add(job_id)
        jobs.append(job)
    jobs.sort(key=lambda j: (j.submit_at, j.line))
    report.loaded = len(jobs)
    return jobs, report
