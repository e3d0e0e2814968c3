"""Writing a replay's results: JSON, CSV, PNG plots and a terminal summary.

report.json         everything: summary, definitions, utilisation series, fragmentation samples,
                    the scenario document as run
summary.csv         one metric per row (metric,value)
jobs.csv            one row per replayed job
costs_by_tag.csv    showback (the FinOps showback over the replay): tag,value,jobs,gpu_hours,compute_usd,
                    egress_usd,storage_usd,total_usd,usd_per_gpu_hour,idle_gpu_hours,flags
utilisation.csv     time and busy GPUs per site
*.png               utilisation, cost, completion/wait CDFs, fragmentation (matplotlib, Agg)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from simulations import metrics
from simulations.engine import RunResult
from simulations.metrics import JobRow
from simulations.workload import Workload


def build_report(workload: Workload, result: RunResult) -> tuple[dict[str, Any], list[JobRow]]:
    rows = metrics.job_rows(workload, result)
    summary = metrics.summarise(workload, result, rows)
    sites = [s.name for s in workload.catalog.sites]
    grid, series = metrics.utilisation_series(rows, sites, result.started_at, result.ended_at)
    capacity = {s: float(workload.catalog.total_gpus(s)) for s in workload.build.onprem_sites}
    report = {
        **summary,
        "definitions": (metrics.__doc__ or "")
        .split("Definitions (also in the report's `definitions` block):")[-1]
        .strip(),
        "utilisation_series": {
            "t": grid,
            "busy_gpus": {s: v for s, v in series.items() if any(v)},
            "onprem_capacity_gpus": capacity,
        },
        "fragmentation_samples": [
            {"at": s.at, "site": s.site, "free_gpus": s.free_gpus, "fragmented_gpus": s.fragmented_gpus}
            for s in result.samples
        ],
        "scenario_document": workload.scenario.document,
    }
    return report, rows


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        elif not isinstance(v, list):
            out[key] = v
    return out


SUMMARY_KEYS = (
    "scenario",
    "placer",
    "period",
    "jobs",
    "cost",
    "deadlines",
    "jct_s",
    "wait_s",
    "burst",
    "utilisation",
    "fragmentation",
    "simulation",
)


def write_outputs(
    report: Mapping[str, Any], rows: Sequence[JobRow] | None, out: Path, *, plots: bool, jobs_csv: bool
) -> list[Path]:
    """Write the replay's files; without `rows` (a report from a Ray worker) no jobs.csv and no CDF plot."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
    written.append(path)

    flat = flatten({k: report[k] for k in SUMMARY_KEYS if k in report and k != "cost"})
    flat.update(flatten({k: v for k, v in report["cost"].items() if k != "by_tag"}, "cost"))
    path = out / "summary.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["metric", "value"])
        for k, v in flat.items():
            w.writerow([k, _cell(v)])
    written.append(path)

    path = out / "costs_by_tag.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        cols = [
            "jobs",
            "gpu_hours",
            "compute_usd",
            "egress_usd",
            "storage_usd",
            "total_usd",
            "usd_per_gpu_hour",
            "idle_gpu_hours",
        ]
        w.writerow(["tag", "value", *cols, "flags"])
        for key, groups in report["cost"]["by_tag"].items():
            for value, acc in groups.items():
                w.writerow([key, value, *(_cell(acc[c]) for c in cols), "; ".join(acc["flags"])])
    written.append(path)

    series = report["utilisation_series"]
    path = out / "utilisation.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        sites = list(series["busy_gpus"])
        w.writerow(["time", *[f"{s}_busy_gpus" for s in sites]])
        for i, t in enumerate(series["t"]):
            w.writerow([_iso(t), *(series["busy_gpus"][s][i] for s in sites)])
    written.append(path)

    if jobs_csv and rows is not None:
        path = out / "jobs.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            write_jobs_csv(rows, f)
        written.append(path)
    if plots:
        written.extend(write_plots(report, rows, out))
    return written


def write_jobs_csv(rows: Sequence[JobRow], f: TextIO) -> None:
    tag_keys = sorted({k for r in rows for k in r.tags})
    w = csv.writer(f)
    cols = [
        "id",
        "trace_id",
        "state",
        "site",
        "pool",
        "gpu_model",
        "spot",
        "onprem",
        "gpus",
        "submit_at",
        "start_at",
        "end_at",
        "wait_s",
        "jct_s",
        "held_s",
        "deadline_at",
        "deadline_met",
        "compute_usd",
        "egress_usd",
        "storage_usd",
        "total_usd",
        "reason",
    ]
    w.writerow([*cols, *[f"tag_{k}" for k in tag_keys]])
    for r in rows:
        values = [getattr(r, c) for c in cols]
        w.writerow([*(_cell(v) for v in values), *(r.tags.get(k, "") for k in tag_keys)])


def write_plots(report: Mapping[str, Any], rows: Sequence[JobRow] | None, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    series = report["utilisation_series"]
    t = np.array(series["t"], dtype=float)
    days = (t - t[0]) / 86400.0 if len(t) else t
    caps = series["onprem_capacity_gpus"]

    fig, ax = plt.subplots(figsize=(10, 4))
    for site, busy in series["busy_gpus"].items():
        label = f"{site} (on-prem, {caps[site]:.0f} GPUs)" if site in caps else site
        ax.plot(days, busy, label=label, linewidth=1.2 if site in caps else 0.8)
        if site in caps:
            ax.axhline(caps[site], linestyle=":", color="grey", linewidth=0.8)
    ax.set_xlabel("days since the first arrival")
    ax.set_ylabel("busy GPUs")
    ax.set_title(f"{report['scenario']}: GPUs in use per site")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "utilisation.png"))

    cost = report["cost"]
    parts = {
        "compute on-prem": cost["compute_onprem_usd"],
        "compute cloud": cost["compute_cloud_usd"],
        "egress": cost["egress_usd"],
        "storage": cost["storage_usd"],
        "on-prem idle": cost["onprem_idle_usd"],
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(list(parts), list(parts.values()), color=["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#c0c0c0"])
    ax.set_ylabel("USD")
    ax.set_title(f"{report['scenario']}: total ${cost['total_usd']:,.0f}")
    for i, v in enumerate(parts.values()):
        ax.text(i, v, f"${v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    written.append(_save(fig, out / "cost.png"))

    if rows is not None:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, values in (
            ("JCT", [r.jct_s for r in rows if r.jct_s is not None]),
            ("wait", [r.wait_s for r in rows if r.wait_s is not None]),
        ):
            if values:
                v = np.sort(np.maximum(np.asarray(values, dtype=float), 1.0)) / 3600.0
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("hours")
        ax.set_ylabel("fraction of jobs")
        ax.set_title(f"{report['scenario']}: completion and wait times")
        ax.legend()
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "jct_wait_cdf.png"))

    samples = report["fragmentation_samples"]
    if samples:
        fig, ax = plt.subplots(figsize=(10, 4))
        t0 = series["t"][0] if series["t"] else samples[0]["at"]
        for site in sorted({s["site"] for s in samples}):
            mine = [s for s in samples if s["site"] == site]
            x = [(s["at"] - t0) / 86400.0 for s in mine]
            ax.plot(x, [s["fragmented_gpus"] for s in mine], label=f"{site} fragmented")
            ax.plot(x, [s["free_gpus"] for s in mine], linestyle=":", label=f"{site} free")
        ax.set_xlabel("days since the first arrival")
        ax.set_ylabel("GPUs")
        ax.set_title(f"{report['scenario']}: free GPU capacity the typical task cannot use")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "fragmentation.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 6)
    return v


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    return str(v)


# ------------------------------------------------------------------------------------------ terminal


def _usd(x: float) -> str:
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def _h(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The terminal summary of one replay."""
    c, j, b = report["cost"], report["jobs"], report["burst"]
    d, jct, wait = report["deadlines"], report["jct_s"], report["wait_s"]
    sim = report["simulation"]
    lines = [
        f"scenario {report['scenario']}  placer {report['placer']}  seed {report['seed']}  "
        f"{report['period']['days']:.1f} days replayed in {sim['wall_s']:.1f} s ({sim['cycles']:,} cycles)",
        f"jobs      {j['replayed']:,} replayed: {j['succeeded']:,} succeeded, {j['rejected']:,} rejected, "
        f"{j['unfinished']:,} unfinished",
        f"cost      total {_usd(c['total_usd'])} = compute {_usd(c['compute_usd'])} "
        f"(on-prem {_usd(c['compute_onprem_usd'])}, cloud {_usd(c['compute_cloud_usd'])}) + egress "
        f"{_usd(c['egress_usd'])} + storage {_usd(c['storage_usd'])} + on-prem idle {_usd(c['onprem_idle_usd'])}",
        f"burst     {100 * b['share_of_gpu_hours']:.1f}% of GPU-hours "
        f"({100 * b['share_of_jobs']:.1f}% of jobs) in the cloud",
        f"JCT       p50 {_h(jct['p50'])}  p90 {_h(jct['p90'])}  p99 {_h(jct['p99'])}   "
        f"wait p50 {_h(wait['p50'])}  p90 {_h(wait['p90'])}  p99 {_h(wait['p99'])}",
    ]
    if d["with_deadline"]:
        lines.append(f"deadlines {d['met']:,}/{d['with_deadline']:,} met ({100 * d['attainment']:.1f}%)")
    for site, u in report["utilisation"]["mean_onprem"].items():
        f = report["fragmentation"].get(site)
        extra = ""
        if f:
            extra = (
                f"; fragmented {f['mean_fragmented_gpus']:.1f} GPUs on average "
                f"({100 * f['mean_fragmentation_rate']:.1f}% of free)"
            )
        lines.append(f"on-prem   {site}: {100 * u:.1f}% utilised{extra}")
    for key, groups in c["by_tag"].items():
        top = list(groups.items())[:4]
        lines.append(
            f"by {key}: "
            + "  ".join(f"{v} {_usd(g['total_usd'])}" for v, g in top)
            + ("  ..." if len(groups) > 4 else "")
        )
    for rep in report["trace"]["load"]:
        if rep["skipped"] or rep["duplicates_dropped"]:
            lines.append(
                f"trace     {rep['skipped']} malformed rows skipped, {rep['duplicates_dropped']} duplicates dropped"
            )
    return lines


COMPARE_ROWS: tuple[tuple[str, str, Any], ...] = (
    ("total USD", "cost.total_usd", _usd),
    ("compute USD", "cost.compute_usd", _usd),
    ("  cloud compute USD", "cost.compute_cloud_usd", _usd),
    ("egress USD", "cost.egress_usd", _usd),
    ("storage USD", "cost.storage_usd", _usd),
    ("on-prem idle USD", "cost.onprem_idle_usd", _usd),
    ("burst share (GPU-h)", "burst.share_of_gpu_hours", lambda x: f"{100 * x:.1f}%"),
    ("deadline attainment", "deadlines.attainment", lambda x: "-" if x is None else f"{100 * x:.1f}%"),
    ("JCT p50", "jct_s.p50", _h),
    ("JCT p90", "jct_s.p90", _h),
    ("JCT p99", "jct_s.p99", _h),
    ("JCT mean", "jct_s.mean", _h),
    ("wait p50", "wait_s.p50", _h),
    ("wait p99", "wait_s.p99", _h),
    ("rejected", "jobs.rejected", lambda x: f"{x:,}"),
    ("unfinished", "jobs.unfinished", lambda x: f"{x:,}"),
    ("wall s", "simulation.wall_s", lambda x: f"{x:.1f}"),
)


def lookup(report: Mapping[str, Any], dotted: str) -> Any:
    node: Any = report
    for part in dotted.split("."):
        node = node[part]
    return node


def compare_lines(labels: Sequence[str], reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """A side-by-side table of several replays of the same trace."""
    width = max(14, *(len(x) for x in labels))
    first = max(len(r[0]) for r in COMPARE_ROWS)
    lines = ["".ljust(first) + "  " + "  ".join(x.rjust(width) for x in labels)]
    for name, key, fmt in COMPARE_ROWS:
        cells = [fmt(lookup(r, key)).rjust(width) for r in reports]
        lines.append(name.ljust(first) + "  " + "  ".join(cells))
    return lines


def write_comparison(labels: Sequence[str], reports: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    summaries = [{k: r[k] for k in SUMMARY_KEYS if k in r} for r in reports]
    path_json = out / "compare.json"
    path_json.write_text(
        json.dumps(dict(zip(labels, summaries, strict=True)), indent=1, default=_json_default) + "\n", encoding="utf-8"
    )
    path_csv = out / "compare.csv"
    with path_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["metric", *labels])
        flats = [
            flatten({k: v for k, v in s.items() if k != "cost"})
            | flatten({k: v for k, v in s["cost"].items() if k != "by_tag"}, "cost")
            for s in summaries
        ]
        for key in flats[0]:
            w.writerow([key, *(_cell(fl.get(key)) for fl in flats)])
    return [path_json, path_csv]
