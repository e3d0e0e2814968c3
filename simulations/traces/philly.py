"""Microsoft Philly (Jeon et al., USENIX ATC'19; CC-BY-4.0), as pre-processed by Pollux and Helios.

Jobs (`philly_jobs_pollux.csv`, from the Pollux OSDI'21 artifact):

    timestamp,duration,num_gpus,gpu_time,cluster
    2017-10-09 07:01:55,66.0,1,66.0,11cb48

`timestamp` is the submit time as a local wall clock without a zone, `duration` the runtime in
seconds, `gpu_time` = num_gpus x duration (checked), `cluster` the virtual cluster (VC) hash.
Quirks handled here:
  * the file ends with a blank line: blank lines are counted, never an error;
  * 65 rows are exact duplicates of an earlier row: by default the repeats are dropped and
    counted (`duplicates="keep"` replays them as separate jobs);
  * local times: `timezone` names the zone the wall clock is in (default "UTC": the trace's
    own clock, with no daylight-saving gaps or repeats). With a real zone, an ambiguous time in
    the autumn repeat hour takes its first occurrence and a time in the spring gap moves forward.

VC nodes (`philly_vc_nodes_helios.csv`, from the Helios SC'21 artifact): `vc,node num`. The
file does not say how many GPUs each node has; Philly nodes have 8 (a few have 2), so the
workload builder takes `gpus_per_node` from the scenario.

Job ids are `philly-L<line>`: every simulated job points back to its line in the file.
"""

from __future__ import annotations

import calendar
import datetime as dt
import zoneinfo
from pathlib import Path

from simulations.traces.base import (
    LoadReport,
    OnError,
    RowError,
    TraceError,
    TraceJob,
    TraceNode,
    fail_or_skip,
    read_rows,
)

JOB_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
VC_COLUMNS = ("vc", "node num")
GPU_TIME_TOLERANCE = 1e-6  # relative


_UTC_DAYS: dict[str, float] = {}  # 'YYYY-MM-DD' -> Unix seconds of its midnight (UTC)


def parse_wall_clock(text: str, zone: dt.tzinfo | None) -> float:
    """'YYYY-MM-DD HH:MM:SS' in `zone` (None = UTC) to Unix seconds."""
    if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[10] != " " or text[13] != ":" or text[16] != ":":
        raise RowError(f"timestamp: {text!r} is not 'YYYY-MM-DD HH:MM:SS'")
    if zone is None:  # the fast path: midnight of each day once, then the time of day
        try:
            day = _UTC_DAYS.get(text[:10])
            if day is None:
                day = _UTC_DAYS[text[:10]] = float(
                    calendar.timegm(dt.date(int(text[0:4]), int(text[5:7]), int(text[8:10])).timetuple())
                )
            h, m, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
        except ValueError:
            raise RowError(f"timestamp: {text!r} is not a valid date and time") from None
        if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
            raise RowError(f"timestamp: {text!r} is not a valid date and time")
        return day + h * 3600 + m * 60 + s
    try:
        parts = (int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19]))
        moment = dt.datetime(*parts)  # checks month, day, hour ranges
    except ValueError:
        raise RowError(f"timestamp: {text!r} is not a valid date and time") from None
    # fold=0: an ambiguous time is its first occurrence; a time inside a gap keeps the offset
    # from before the change, which moves it forward by the gap.
    return moment.replace(tzinfo=zone, fold=0).timestamp()


def zone_of(name: str) -> dt.tzinfo | None:
    if name.upper() == "UTC":
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def load_philly_jobs(
    path: str | Path,
    *,
    on_error: OnError = "raise",
    duplicates: str = "drop",
    timezone: str = "UTC",
    measured_on: str = "",
) -> tuple[list[TraceJob], LoadReport]:
    """The jobs of the file, by submit time (then line); see the module docstring for quirks."""
    if duplicates not in ("drop", "keep"):
        raise ValueError(f"duplicates must be 'drop' or 'keep', not {duplicates!r}")
    path = Path(path)
    zone = zone_of(timezone)
    report = LoadReport(str(path))
    seen: set[tuple[str, ...]] = set()
    jobs: list[TraceJob] = []
    for row in read_rows(path, JOB_COLUMNS, report):
        try:
            row.check()
            key = tuple(x.strip() for x in row.raw)
            if key in seen and duplicates == "drop":
                report.duplicates_dropped += 1
                continue
            seen.add(key)
            submit = parse_wall_clock(row.text("timestamp"), zone)
            duration = row.number("duration")
            if duration <= 0:
                raise RowError(f"duration: {duration:g} must be > 0 seconds")
            gpus = row.integer("num_gpus", minimum=1)
            gpu_time = row.number("gpu_time", minimum=0)
            if abs(gpu_time - gpus * duration) > GPU_TIME_TOLERANCE * max(1.0, gpu_time):
                raise RowError(f"gpu_time: {gpu_time:g} is not num_gpus x duration ({gpus * duration:g})")
            vc = row.text("cluster")
        except RowError as exc:
            fail_or_skip(report, on_error, row.line, str(exc))
            continue
        jobs.append(
            TraceJob(
                id=f"philly-L{row.line}",
                submit_at=submit,
                duration_s=duration,
                gpus=gpus,
                group=vc,
                measured_on=measured_on,
                line=row.line,
            )
        )
    if report.duplicates_dropped:
        report.notes.append(f"{report.duplicates_dropped} exact duplicate rows dropped")
    if timezone.upper() == "UTC":
        report.notes.append("timestamps read as UTC wall clock (the trace records no zone)")
    jobs.sort(key=lambda j: (j.submit_at, j.line))
    report.loaded = len(jobs)
    return jobs, report


def load_philly_vc_nodes(path: str | Path, *, gpus_per_node: int = 8, gpu_model: str = "") -> list[TraceNode]:
    """One TraceNode per node of each VC (`gpus_per_node` GPUs each); any bad row is an error."""
    path = Path(path)
    report = LoadReport(str(path))
    nodes: list[TraceNode] = []
    seen: set[str] = set()
    for row in read_rows(path, VC_COLUMNS, report):
        try:
            row.check()
            vc = row.text("vc")
            count = row.integer("node num", minimum=1)
        except RowError as exc:
            raise TraceError(str(path), row.line, str(exc)) from None
        if vc in seen:
            raise TraceError(str(path), row.line, f"vc: {vc!r} listed twice")
        seen.add(vc)
        nodes.extend(TraceNode(f"{vc}-{i:03d}", gpus_per_node, gpu_model, group=vc) for i in range(count))
    if not nodes:
        raise TraceError(str(path), 0, "no VC rows")
    return nodes
