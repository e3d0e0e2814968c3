"""From a scenario to what the engine replays: the catalog, the job specs and their true runtimes.

Traces record when jobs came, how many GPUs they asked for and how long they ran; no public trace
records where their data lived, how big it was, who paid, or when the result was due. The
scenario's `workload` section fills those in with seeded, documented generators:

  datasets     each group makes `count` datasets, sizes log-normal (median, sigma, clipped), each
               with one home site drawn by weight and a classification (public, eu-gdpr, ...) whose
               residency rule the catalog enforces. A job reads one dataset with probability
               `jobs_with_data`, the dataset drawn by popularity rank^-zipf_s (popular datasets are
               shared by many jobs, which is where moving data once pays off).
  deadlines    a `fraction` of jobs get deadline = submit + slack x trace duration, slack uniform
               in [slack_min, slack_max] (the duration on the trace's own GPU).
  tags         per tag key: the job's trace group (Philly VC, openb QoS), or a value drawn by
               weight, per job or once per group (so a VC belongs to one project).
  spot         a `spot_fraction` of jobs accept spot capacity.
  estimates    the runtime the scheduler is told is the true one times a log-normal error
               (sigma 0 = exact); the virtual executor always runs the true duration.

A job's true runtime where it lands is its trace duration x speed(GPU it was measured on) /
speed(GPU it got). The same seed gives the same specs; each draw comes from its own stream
(numpy SeedSequence spawned per generator), so adding deadlines does not reshuffle datasets.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placers.catalog import Catalog, CatalogError, parse_catalog
from placers.domain import JobKind, JobSpec
from placers.fragmentation import TaskMix, TaskShape
from scheduler.admission import InvalidSpec, validate
from scheduler.executors.base import LaunchRequest
from simulations.scenario import DataSection, Scenario
from simulations.sites import SiteBuild, assemble
from simulations.traces.base import LoadReport, TraceError, TraceJob, TraceNode
from simulations.traces.generic import load_generic_jobs
from simulations.traces.openb import load_openb_nodes, load_openb_pods, replay_jobs
from simulations.traces.philly import load_philly_jobs, load_philly_vc_nodes


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    spec: JobSpec


@dataclass
class Workload:
    scenario: Scenario
    catalog: Catalog
    arrivals: list[Arrival]
    truth: dict[str, tuple[float, float]]  # request id -> (trace duration s, speed of the GPU it was measured on)
    mix: TaskMix
    build: SiteBuild
    load_reports: list[LoadReport]
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> jobs not replayed

    @property
    def epoch(self) -> float:
        return self.arrivals[0].at if self.arrivals else 0.0

    def actual_runtime_s(self, request: LaunchRequest) -> float:
        """The true runtime of a launch: trace duration scaled by the speed of the GPU it got."""
        duration, measured_speed = self.truth[request.spec.request_id]
        return duration * measured_speed / self.catalog.gpu_models[request.placement.gpu_model].speed


def _epoch(text: str, scenario: Scenario) -> float:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise scenario.fail("trace.epoch", f"{text!r} is not an ISO 8601 time") from None


def load_trace(scenario: Scenario) -> tuple[list[TraceJob], list[TraceNode], LoadReport]:
    t = scenario.spec.trace
    jobs_path = scenario.path(t.jobs, "trace.jobs")
    nodes_path = scenario.path(t.nodes, "trace.nodes") if t.nodes else None
    if not jobs_path.exists():
        raise scenario.fail("trace.jobs", f"no such file: {jobs_path}")
    if nodes_path is not None and not nodes_path.exists():
        raise scenario.fail("trace.nodes", f"no such file: {nodes_path}")
    nodes: list[TraceNode] = []
    try:
        if t.kind == "philly":
            jobs, report = load_philly_jobs(
                jobs_path, on_error=t.on_error, duplicates=t.duplicates, timezone=t.timezone, measured_on=t.gpu_model
            )
            if nodes_path is not None:
                per_node = scenario.spec.catalog.onprem[0].gpus_per_node if scenario.spec.catalog.onprem else 8
                nodes = load_philly_vc_nodes(nodes_path, gpus_per_node=per_node, gpu_model=t.gpu_model)
        elif t.kind == "openb":
            pods, report = load_openb_pods(jobs_path, on_error=t.on_error)
            jobs = replay_jobs(pods, report, epoch=_epoch(t.epoch, scenario))
            if nodes_path is not None:
                nodes = load_openb_nodes(nodes_path)
        else:
            jobs, report = load_generic_jobs(jobs_path, on_error=t.on_error, timezone=t.timezone)
            if nodes_path is not None:
                nodes = load_openb_nodes(nodes_path)  # generic node lists use the openb node format
    except ValueError as exc:
        if isinstance(exc, TraceError):
            raise
        raise scenario.fail("trace.timezone", str(exc)) from None
    jobs = jobs[t.skip :]
    if t.limit is not None:
        jobs = jobs[: t.limit]
    if t.load_scale != 1.0 and jobs:
        t0 = jobs[0].submit_at
        jobs = [_rescaled(j, t0 + (j.submit_at - t0) / t.load_scale) for j in jobs]
        report.notes.append(f"arrivals compressed {t.load_scale:g}x (load_scale)")
    return jobs, nodes, report


def _rescaled(job: TraceJob, at: float) -> TraceJob:
    shift = at - job.submit_at
    deadline = job.deadline_at + shift if job.deadline_at is not None else None
    return TraceJob(
        id=job.id,
        submit_at=at,
        duration_s=job.duration_s,
        gpus=job.gpus,
        gpu_milli=job.gpu_milli,
        gpu_models=job.gpu_models,
        cpus=job.cpus,
        memory_gb=job.memory_gb,
        group=job.group,
        measured_on=job.measured_on,
        single_node=job.single_node,
        kind=job.kind,
        priority=job.priority,
        deadline_at=deadline,
        datasets=job.datasets,
        tags=job.tags,
        line=job.line,
    )


def generate_datasets(
    section: DataSection, site_names: set[str], rng: np.random.Generator, scenario: Scenario
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ids: set[str] = set()
    for g, group in enumerate(section.groups):
        at = f"workload.data.groups[{g}]"
        sites = list(group.home_sites)
        for s in sites:
            if s not in site_names:
                raise scenario.fail(f"{at}.home_sites.{s}", f"unknown site {s!r}")
        weights = np.array([group.home_sites[s] for s in sites], dtype=np.float64)
        if weights.sum() <= 0:
            raise scenario.fail(f"{at}.home_sites", "weights must not all be 0")
        homes = rng.choice(len(sites), size=group.count, p=weights / weights.sum())
        sizes = np.exp(rng.normal(math.log(group.size.median_gb), group.size.sigma, size=group.count))
        sizes = np.clip(sizes, group.size.min_gb, group.size.max_gb)
        for i in range(group.count):
            did = f"{group.prefix}-{g}-{i:04d}"
            if did in ids:
                raise scenario.fail(f"{at}.prefix", f"dataset id {did!r} made twice")
            ids.add(did)
            out.append(
                {
                    "id": did,
                    "size_gb": round(float(sizes[i]), 3),
                    "replica_sites": [sites[int(homes[i])]],
                    "classification": group.classification,
                }
            )
    return out


def _stable(*parts: object) -> int:
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


def build_workload(scenario: Scenario) -> Workload:
    spec = scenario.spec
    trace_jobs, nodes, report = load_trace(scenario)
    doc, build = assemble(scenario, nodes)
    streams = np.random.SeedSequence(spec.seed).spawn(8)
    rng_data, rng_pick, rng_deadline, rng_spot, rng_est, rng_tags, _, _ = (np.random.default_rng(s) for s in streams)
    data = spec.workload.data
    generated: list[str] = []
    if data is not None:
        made = generate_datasets(data, {s["name"] for s in doc["sites"]}, rng_data, scenario)
        generated = [d["id"] for d in made]
        doc["datasets"] = [*doc.get("datasets", []), *made]
    try:
        catalog = parse_catalog(doc, f"{scenario.source} (catalog built from the scenario)")
    except CatalogError as exc:
        raise scenario.fail(f"catalog: {exc.field}", exc.message) from None
    t = spec.trace
    if t.gpu_model not in catalog.gpu_models:
        raise scenario.fail(
            "trace.gpu_model", f"{t.gpu_model!r} is not a GPU model of the catalog (add it under catalog.gpu_models)"
        )

    n = len(trace_jobs)
    w = spec.workload
    has_data = rng_pick.random(n) < (data.jobs_with_data if data else 0.0)
    if generated:
        ranks = np.arange(1, len(generated) + 1, dtype=np.float64)
        pop = ranks ** -(data.zipf_s if data else 0.0)
        pick = rng_pick.choice(len(generated), size=n, p=pop / pop.sum())
    else:
        pick = np.zeros(n, dtype=np.int64)
    with_deadline = rng_deadline.random(n) < (w.deadlines.fraction if w.deadlines else 0.0)
    slack = rng_deadline.uniform(w.deadlines.slack_min, w.deadlines.slack_max, n) if w.deadlines else np.ones(n)
    spot = rng_spot.random(n) < w.spot_fraction
    noise = np.exp(rng_est.normal(0.0, w.runtime_estimate_sigma, n)) if w.runtime_estimate_sigma > 0 else np.ones(n)
    tag_draws = {
        key: rng_tags.random(n)
        for key, rule in sorted(w.tags.items())
        if rule.values is not None and not rule.per_group
    }
    tag_drawer = _TagDrawer(w.tags, tag_draws, spec.seed)

    onprem = set(build.onprem_sites)
    cloud = [s.name for s in catalog.sites if s.name not in onprem]
    node_width = max((p.gpus_per_node for p in catalog.pools if not p.elastic), default=0) or max(
        p.gpus_per_node for p in catalog.pools
    )
    forbidden = build.forbidden_sites
    all_sites = [s.name for s in catalog.sites]
    open_sites = tuple(s for s in all_sites if s not in forbidden) if forbidden else ()
    speed_ref = {m: g.speed for m, g in catalog.gpu_models.items()}

    arrivals: list[Arrival] = []
    truth: dict[str, tuple[float, float]] = {}
    dropped: dict[str, int] = {}
    shapes: list[TaskShape] = []
    notes: list[str] = [*build.notes]
    unknown_groups: set[str] = set()

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    for i, job in enumerate(trace_jobs):
        measured = job.measured_on or t.gpu_model
        if measured not in speed_ref:
            if t.on_error == "raise":
                raise TraceError(report.source, job.line, f"measured_on: unknown GPU model {measured!r}")
            report.skip(job.line, f"measured_on: unknown GPU model {measured!r}")
            continue
        if job.gpus == 0:
            drop("CPU-only job")
            continue
        allowed: tuple[str, ...] = open_sites
        if build.group_site:
            own = build.group_site.get(job.group)
            if own is None:
                unknown_groups.add(job.group)
            base_sites = ((own,) if own else ()) + tuple(cloud)
            allowed = tuple(s for s in base_sites if s not in forbidden)
            if not allowed:
                drop("no allowed site after forbid")
                continue
        elif forbidden and not open_sites:
            drop("no allowed site after forbid")
            continue
        tags = tag_drawer(job, i)
        datasets: tuple[str, ...] = job.datasets
        if not datasets and has_data[i] and generated:
            datasets = (generated[int(pick[i])],)
        deadline = job.deadline_at
        kind = JobKind(job.kind if job.kind in ("training", "batch") else w.kind)
        if deadline is None and with_deadline[i]:
            deadline = job.submit_at + float(slack[i]) * job.duration_s
        gpu_models = job.gpu_models or ((t.gpu_model,) if w.same_gpu_model else ())
        if w.gang == "always":
            single = True
        elif w.gang == "never":
            single = job.gpus == 1
        else:
            single = job.single_node if job.single_node is not None else job.gpus <= node_width
        runtime_ref = job.duration_s * speed_ref[measured]
        s = JobSpec(
            name=job.id,
            kind=kind,
            gpus=job.gpus,
            entrypoint=f"replay {job.id}",
            gpu_milli=job.gpu_milli,
            gpu_models=gpu_models,
            cpus=job.cpus,
            memory_gb=job.memory_gb,
            single_node=single,
            runtime_s=runtime_ref * float(noise[i]),
            deadline_at=deadline,
            priority=job.priority,
            tags=tags,
            datasets=datasets,
            allowed_sites=allowed,
            spot_ok=bool(spot[i]),
            request_id=job.id,
        )
        try:
            validate(s, catalog, job.submit_at - 1.0)
        except InvalidSpec as exc:
            if t.on_error == "raise":
                raise TraceError(report.source, job.line, f"job {job.id}: {exc}") from None
            report.skip(job.line, f"job {job.id}: {exc}")
            continue
        arrivals.append(Arrival(job.submit_at, s))
        truth[job.id] = (job.duration_s, speed_ref[measured])
        shapes.append(TaskShape(job.gpus, job.gpu_milli, round(job.cpus * 1000), job.gpu_models))
    if unknown_groups:
        notes.append(
            f"jobs of {len(unknown_groups)} trace groups with no nodes ({', '.join(sorted(unknown_groups))}) "
            "may use cloud sites only"
        )
    for reason, k in dropped.items():
        notes.append(f"{k} jobs not replayed: {reason}")
    if not arrivals:
        raise scenario.fail("trace", "no job left to replay")
    return Workload(
        scenario=scenario,
        catalog=catalog,
        arrivals=arrivals,
        truth=truth,
        mix=TaskMix.from_shapes(shapes),
        build=build,
        load_reports=[report],
        notes=notes,
        dropped=dropped,
    )


class _TagDrawer:
    """Tag values for jobs: from the trace group, or drawn by weight (per job from a pre-drawn
    uniform, or once per trace group from a stream seeded by (seed, tag, group))."""

    def __init__(self, rules: Any, draws: dict[str, np.ndarray[Any, np.dtype[np.float64]]], seed: int) -> None:
        self.seed = seed
        self.draws = draws
        self.plan: list[tuple[str, Any, list[str], list[float]]] = []
        for key, rule in sorted(rules.items()):
            values = list(rule.values or ())
            cum: list[float] = []
            if values:
                weights = np.array([rule.values[v] for v in values], dtype=np.float64)
                cum = np.cumsum(weights / weights.sum()).tolist()
            self.plan.append((key, rule, values, cum))
        self._per_group: dict[tuple[str, str], str] = {}

    def _pick(self, values: list[str], cum: list[float], u: float) -> str:
        return values[min(bisect.bisect_right(cum, u), len(values) - 1)]

    def __call__(self, job: TraceJob, index: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, rule, values, cum in self.plan:
            if rule.from_group:
                out[key] = job.group or "unknown"
            elif rule.per_group:
                hit = self._per_group.get((key, job.group))
                if hit is None:
                    u = np.random.default_rng([self.seed, _stable(key), _stable(job.group)]).random()
                    hit = self._per_group[(key, job.group)] = self._pick(values, cum, u)
                out[key] = hit
            else:
                out[key] = self._pick(values, cum, float(self.draws[key][index]))
        out.update(job.tags)
        return out


def group_arrivals(arrivals: Sequence[Arrival]) -> list[tuple[float, list[JobSpec]]]:
    """Arrivals with the same timestamp, batched (they are submitted in one call)."""
    out: list[tuple[float, list[JobSpec]]] = []
    for a in arrivals:
        if out and out[-1][0] == a.at:
            out[-1][1].append(a.spec)
        else:
            out.append((a.at, [a.spec]))
    return out
