"""What a replay measured: cost, deadlines, completion and wait times, utilisation, burst, fragmentation.

Definitions (also in the report's `definitions` block):

  compute_usd      per job: GPUs x hours it held them (launch to end, data transfer included) x
                   the price of the capacity it got (spot price when on spot). On-prem prices
                   are amortised cost per GPU-hour.
  egress_usd,
  storage_usd      per job: as the placement decided (its share of dataset moves, cached copies).
  onprem_idle_usd  on-prem capacity that ran nothing: (GPUs x span - GPU-hours used) x price. It is
                   paid whether used or not, so buying GPUs shows up here when they sit idle.
  total_usd        compute + egress + storage + on-prem idle: what the replayed period cost.
  wait_s           launch - submit; jct_s: end - submit (finished jobs).
  deadline         met when a job with a deadline finished by it; rejected and unfinished jobs
                   with a deadline count as missed.
  burst_share      cloud GPU-hours / all GPU-hours (also by job count).
  utilisation      busy GPUs / GPUs of each on-prem site over time (cloud: busy GPUs).
  fragmentation    Weng et al.'s measure: free GPU capacity the typical task of this workload
                   cannot use (placers.fragmentation), sampled every `simulation.sample_s`;
                   rate = fragmented / free.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from placers.catalog import Catalog
from placers.domain import Job, JobState
from scheduler.finops.periods import Period
from scheduler.finops.showback import showback
from simulations.engine import RunResult
from simulations.workload import Workload

PERCENTILES = (50, 90, 99)
SERIES_POINTS = 400  # utilisation series resolution


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    trace_id: str
    state: str
    site: str
    pool: str
    gpu_model: str
    spot: bool
    onprem: bool
    gpus: float
    submit_at: float
    start_at: float | None
    end_at: float | None
    wait_s: float | None
    jct_s: float | None
    held_s: float
    deadline_at: float | None
    deadline_met: bool | None
    compute_usd: float
    egress_usd: float
    storage_usd: float
    reason: str
    tags: dict[str, str]

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.egress_usd + self.storage_usd


def _price(catalog: Catalog, job: Job) -> float:
    p = job.placement
    assert p is not None
    pool = catalog.pool(f"{p.site}/{p.pool}")
    if p.spot and pool.spot_usd_per_gpu_hour is not None:
        return pool.spot_usd_per_gpu_hour
    return pool.usd_per_gpu_hour


def job_rows(workload: Workload, result: RunResult) -> list[JobRow]:
    catalog = workload.catalog
    onprem = set(workload.build.onprem_sites)
    rows = []
    for job in result.jobs:
        spec = job.spec
        p = job.placement
        start = job.started_at
        end = job.finished_at if job.state is JobState.SUCCEEDED else None
        held = 0.0
        compute = egress = storage = 0.0
        site = pool = model = ""
        spot = False
        if p is not None:
            site, pool, model, spot = p.site, p.pool, p.gpu_model, p.spot
            began = start if start is not None else p.start_at
            stop = end if end is not None else result.ended_at
            held = max(0.0, stop - began)
            compute = spec.gpu_equivalents * spec.replicas * held / 3600.0 * _price(catalog, job)
            egress, storage = p.cost.egress_usd, p.cost.storage_usd
        met: bool | None = None
        if spec.deadline_at is not None:
            met = end is not None and end <= spec.deadline_at + 1e-6
        rows.append(
            JobRow(
                id=job.id,
                trace_id=spec.request_id,
                state=job.state.value,
                site=site,
                pool=pool,
                gpu_model=model,
                spot=spot,
                onprem=site in onprem,
                gpus=spec.gpu_equivalents * spec.replicas,
                submit_at=job.created_at,
                start_at=start,
                end_at=end,
                wait_s=(start - job.created_at) if start is not None else None,
                jct_s=(end - job.created_at) if end is not None else None,
                held_s=held,
                deadline_at=spec.deadline_at,
                deadline_met=met,
                compute_usd=compute,
                egress_usd=egress,
                storage_usd=storage,
                reason=job.reason if job.state in (JobState.REJECTED, JobState.PENDING) else "",
                tags=dict(spec.tags),
            )
        )
    return rows


def cost_by_tag(result: RunResult, catalog: Catalog, keys: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Showback of the replay: the FinOps showback (scheduler.finops.showback, what CostReport
    serves) over the replay's job records for the whole replayed span, one grouping per tag key.
    {key: {value: {jobs, gpu_hours, compute_usd, egress_usd, storage_usd, total_usd,
    usd_per_gpu_hour, idle_gpu_hours, flags}}}, most expensive first; '(untagged)' for jobs
    without the tag."""
    period = Period("replay", result.started_at, result.ended_at + 1.0)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in keys:
        report = showback(result.jobs, (key,), period, result.ended_at, catalog=catalog)
        out[key] = {
            row.group[0]: {
                "jobs": row.jobs,
                "gpu_hours": row.costs.gpu_hours,
                "compute_usd": row.costs.compute_usd,
                "egress_usd": row.costs.egress_usd,
                "storage_usd": row.costs.storage_usd,
                "total_usd": row.costs.total_usd,
                "usd_per_gpu_hour": row.usd_per_gpu_hour,
                "idle_gpu_hours": row.costs.idle_gpu_hours,
                "flags": list(row.flags),
            }
            for row in report.rows
        }
    return out


def _first_reason(text: str) -> str:
    """'no site can ever run this job: GPU model ... (a, b); dataset ...' -> its first reason."""
    body = text.split(": ", 1)[1] if text.startswith("no site can ever run this job: ") else text
    return body.split(";")[0].split(" (")[0].strip()[:160]


def _pct(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "mean": 0.0, **{f"p{q}": 0.0 for q in PERCENTILES}}
    a = np.asarray(values, dtype=np.float64)
    return {"count": len(a), "mean": float(a.mean()), **{f"p{q}": float(np.percentile(a, q)) for q in PERCENTILES}}


def utilisation_series(
    rows: Sequence[JobRow], sites: Sequence[str], t0: float, t1: float, points: int = SERIES_POINTS
) -> tuple[list[float], dict[str, list[float]]]:
    """Busy GPUs per site at `points` evenly spaced times in [t0, t1]."""
    grid = np.linspace(t0, t1, points) if t1 > t0 else np.array([t0])
    series: dict[str, list[float]] = {}
    for site in sites:
        mine = [r for r in rows if r.site == site and r.start_at is not None]
        if not mine:
            series[site] = [0.0] * len(grid)
            continue
        starts = np.array([r.start_at for r in mine], dtype=np.float64)
        ends = np.array([r.end_at if r.end_at is not None else np.inf for r in mine], dtype=np.float64)
        g = np.array([r.gpus for r in mine])
        order_s, order_e = np.argsort(starts, kind="stable"), np.argsort(ends, kind="stable")
        up = np.concatenate([[0.0], np.cumsum(g[order_s])])[np.searchsorted(starts[order_s], grid, side="right")]
        down = np.concatenate([[0.0], np.cumsum(g[order_e])])[np.searchsorted(ends[order_e], grid, side="right")]
        series[site] = [round(float(x), 6) for x in up - down]
    return [float(x) for x in grid], series


def summarise(workload: Workload, result: RunResult, rows: Sequence[JobRow]) -> dict[str, Any]:
    scenario = workload.scenario
    catalog = workload.catalog
    onprem = workload.build.onprem_sites
    span_s = max(result.ended_at - result.started_at, 1.0)
    states = Counter(r.state for r in rows)

    compute_onprem = sum(r.compute_usd for r in rows if r.onprem)
    compute_cloud = sum(r.compute_usd for r in rows if r.site and not r.onprem)
    egress = sum(r.egress_usd for r in rows)
    storage = sum(r.storage_usd for r in rows)
    idle = 0.0
    site_capacity: dict[str, float] = {}
    for site in onprem:
        for pool in catalog.site(site).pools:
            cap_h = pool.max_gpus * span_s / 3600.0
            used_h = sum(r.gpus * r.held_s / 3600.0 for r in rows if r.site == site and r.pool == pool.name)
            idle += max(0.0, cap_h - used_h) * pool.usd_per_gpu_hour
            site_capacity[site] = site_capacity.get(site, 0.0) + pool.max_gpus
    jobs_usd = compute_onprem + compute_cloud + egress + storage

    gpu_hours = [r.gpus * r.held_s / 3600.0 for r in rows]
    total_gh = sum(gpu_hours)
    cloud_gh = sum(h for h, r in zip(gpu_hours, rows, strict=True) if r.site and not r.onprem)
    placed = [r for r in rows if r.site]
    cloud_jobs = sum(1 for r in placed if not r.onprem)

    with_deadline = [r for r in rows if r.deadline_at is not None]
    met = sum(1 for r in with_deadline if r.deadline_met)
    finished = [r for r in rows if r.jct_s is not None]
    started = [r for r in rows if r.wait_s is not None]

    by_site: dict[str, dict[str, float]] = {}
    for r, h in zip(rows, gpu_hours, strict=True):
        if not r.site:
            continue
        acc = by_site.setdefault(r.site, {"jobs": 0, "gpu_hours": 0.0, "compute_usd": 0.0, "egress_usd": 0.0})
        acc["jobs"] += 1
        acc["gpu_hours"] += h
        acc["compute_usd"] += r.compute_usd
        acc["egress_usd"] += r.egress_usd
    utilisation = {
        site: (by_site.get(site, {}).get("gpu_hours", 0.0) / (cap * span_s / 3600.0)) if cap else 0.0
        for site, cap in site_capacity.items()
    }

    frag: dict[str, dict[str, float]] = {}
    for site in onprem:
        samples = [s for s in result.samples if s.site == site]
        if not samples:
            continue
        fragmented = np.array([s.fragmented_gpus for s in samples])
        free = np.array([s.free_gpus for s in samples])
        rate = np.divide(fragmented, free, out=np.zeros_like(fragmented), where=free > 0)
        frag[site] = {
            "samples": len(samples),
            "mean_fragmented_gpus": float(fragmented.mean()),
            "max_fragmented_gpus": float(fragmented.max()),
            "mean_free_gpus": float(free.mean()),
            "mean_fragmentation_rate": float(rate[free > 0].mean()) if (free > 0).any() else 0.0,
        }

    reasons = Counter(_first_reason(r.reason) for r in rows if r.state == "rejected")
    tags = cost_by_tag(result, catalog, scenario.spec.report.tags)
    load = [rep.as_dict() for rep in workload.load_reports]
    return {
        "scenario": scenario.name,
        "description": scenario.spec.description,
        "seed": scenario.spec.seed,
        "placer": result.placer,
        "trace": {"kind": scenario.spec.trace.kind, "load": load, "notes": workload.notes},
        "period": {"start_at": result.started_at, "end_at": result.ended_at, "days": span_s / 86400.0},
        "jobs": {
            "replayed": len(rows),
            "succeeded": states.get("succeeded", 0),
            "rejected": states.get("rejected", 0),
            "unfinished": states.get("pending", 0) + states.get("placed", 0) + states.get("running", 0),
            "not_replayed": dict(workload.dropped),
            "rejection_reasons": dict(reasons.most_common(5)),
        },
        "cost": {
            "total_usd": jobs_usd + idle,
            "compute_usd": compute_onprem + compute_cloud,
            "compute_onprem_usd": compute_onprem,
            "compute_cloud_usd": compute_cloud,
            "egress_usd": egress,
            "storage_usd": storage,
            "onprem_idle_usd": idle,
            "jobs_usd": jobs_usd,
            "by_site": {k: by_site[k] for k in sorted(by_site)},
            "by_tag": tags,
        },
        "deadlines": {
            "with_deadline": len(with_deadline),
            "met": met,
            "attainment": met / len(with_deadline) if with_deadline else None,
        },
        "jct_s": _pct([r.jct_s for r in finished if r.jct_s is not None]),
        "wait_s": _pct([r.wait_s for r in started if r.wait_s is not None]),
        "burst": {
            "cloud_gpu_hours": cloud_gh,
            "total_gpu_hours": total_gh,
            "share_of_gpu_hours": cloud_gh / total_gh if total_gh else 0.0,
            "share_of_jobs": cloud_jobs / len(placed) if placed else 0.0,
        },
        "utilisation": {"mean_onprem": utilisation},
        "fragmentation": frag,
        "simulation": {
            "cycles": result.cycles,
            "cycle_wall_s": result.cycle_wall_s,
            "wall_s": result.wall_s,
            "interval_s": scenario.spec.simulation.interval_s,
        },
    }
