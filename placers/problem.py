"""The placement problem: every pending job against every placement option, costed once.

An *option* is one way to run a job: a pool of a site, on-demand or spot. For a batch of
jobs the builder computes, vectorised with numpy, a (jobs x options) table of

    runtime_s     runtime at the option's GPU speed
    compute_usd   GPUs x runtime x price
    egress_usd    moving each dataset from its cheapest replica (0 where a replica already is)
    storage_usd   keeping the copied dataset as a cached replica for its time-to-live
    transfer_s    GB / bandwidth from that replica
    finish_at     now + transfer + runtime
    reasons       a bitmask of `Reason`; 0 = feasible now

Every placer scores with these same numbers; none recomputes a price.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from placers.capacity import FULL, CapacityState, Demand
from placers.catalog import SECONDS_PER_MONTH, Catalog
from placers.domain import (
    CostBreakdown,
    DataMove,
    Dataset,
    JobKind,
    JobSpec,
    NodeBinding,
    Placement,
    UnixSeconds,
)

if TYPE_CHECKING:  # placers.waiting reads problems; the problem only carries its settings
    from placers.waiting import ReleaseTimeline, WaitRule

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
B = npt.NDArray[np.bool_]


class Reason(enum.IntFlag):
    """Why an option cannot take a job. Permanent reasons never clear; transient ones may."""

    GPU_MODEL = 1 << 0
    NODE_SHAPE = 1 << 1
    RESIDENCY = 1 << 2
    JURISDICTION = 1 << 3
    SITE_NOT_ALLOWED = 1 << 4
    DEADLINE = 1 << 5
    LATENCY = 1 << 6
    MAX_COST = 1 << 7
    SPOT = 1 << 8
    DEDICATED = 1 << 9
    # transient
    CAPACITY = 1 << 16
    SITE_UNAVAILABLE = 1 << 17
    BUDGET = 1 << 18
    DEFERRED = 1 << 19  # a placer chose to wait for cheaper capacity

    @property
    def permanent(self) -> bool:
        return bool(self & PERMANENT)


PERMANENT = Reason(0xFFFF)
TRANSIENT = Reason(~0xFFFF & 0xFFFFFFFF)

REASON_TEXT: Mapping[Reason, str] = {
    Reason.GPU_MODEL: "GPU model not allowed",
    Reason.NODE_SHAPE: "job does not fit the node shape or the pool",
    Reason.RESIDENCY: "dataset residency",
    Reason.JURISDICTION: "jurisdiction not allowed",
    Reason.SITE_NOT_ALLOWED: "site not allowed",
    Reason.DEADLINE: "would finish after the deadline",
    Reason.LATENCY: "latency SLO not met",
    Reason.MAX_COST: "above the job's maximum cost",
    Reason.SPOT: "spot capacity not allowed",
    Reason.DEDICATED: "dedicated-hardware rule",
    Reason.CAPACITY: "no free capacity",
    Reason.SITE_UNAVAILABLE: "site unavailable",
    Reason.BUDGET: "cost-center budget exhausted",
    Reason.DEFERRED: "waiting for cheaper capacity",
}


def reason_names(bits: int) -> list[str]:
    return [REASON_TEXT[r] for r in Reason if bits & r]


@dataclass(frozen=True)
class Options:
    """The columns of the problem: each pool, on-demand and (where offered) spot."""

    pool: I32
    site: I32
    spot: B
    usd_per_gpu_hour: F64
    speed: F64
    gpus_per_node: I32
    max_gpus: I32
    dedicated: B
    elastic: B
    model: I32  # index into model_names
    model_names: tuple[str, ...]
    node_cpus: F64  # CPUs per node (inf when the pool does not say)
    node_memory_gb: F64  # memory per node (inf when the pool does not say)

    @classmethod
    def of(cls, catalog: Catalog) -> Options:
        models = tuple(catalog.gpu_models)
        rows: list[tuple[int, int, bool, float]] = []
        for pi, p in enumerate(catalog.pools):
            si = catalog.site_index[p.site]
            rows.append((pi, si, False, p.usd_per_gpu_hour))
            if p.spot_usd_per_gpu_hour is not None:
                rows.append((pi, si, True, p.spot_usd_per_gpu_hour))
        pools = [catalog.pools[r[0]] for r in rows]
        return cls(
            pool=np.array([r[0] for r in rows], dtype=np.int32),
            site=np.array([r[1] for r in rows], dtype=np.int32),
            spot=np.array([r[2] for r in rows], dtype=bool),
            usd_per_gpu_hour=np.array([r[3] for r in rows]),
            speed=np.array([catalog.gpu_models[p.gpu_model].speed for p in pools]),
            gpus_per_node=np.array([p.gpus_per_node for p in pools], dtype=np.int32),
            max_gpus=np.array([p.max_gpus for p in pools], dtype=np.int32),
            dedicated=np.array([p.dedicated for p in pools], dtype=bool),
            elastic=np.array([p.elastic for p in pools], dtype=bool),
            model=np.array([models.index(p.gpu_model) for p in pools], dtype=np.int32),
            model_names=models,
            node_cpus=np.array([p.cpus_per_node or np.inf for p in pools]),
            node_memory_gb=np.array([p.memory_gb_per_node or np.inf for p in pools]),
        )

    def __len__(self) -> int:
        return len(self.pool)


@dataclass(frozen=True)
class ProblemSettings:
    replica_ttl_s: float = 7 * 86400.0  # how long a copied dataset is kept (and paid for)
    service_horizon_s: float = 30 * 86400.0  # costing horizon of a long-running service
    waiting: WaitRule | None = None  # wait-or-burst rule (placers.waiting); None = its default


@dataclass
class PlacementProblem:
    """A frozen batch: jobs x options with costs, times and reasons. Build with `build_problem`."""

    catalog: Catalog
    options: Options
    specs: Sequence[JobSpec]
    job_ids: Sequence[str]
    datasets: Sequence[Sequence[Dataset]]  # resolved, per job
    now: UnixSeconds
    capacity: CapacityState
    demands: Sequence[Demand]
    priority: I32
    deadline_at: F64  # inf = none
    runtime_s: F64  # [J, O]
    compute_usd: F64
    egress_usd: F64
    storage_usd: F64
    transfer_s: F64
    reasons: I32  # [J, O] Reason bits, capacity as of `now`
    budget_key: Sequence[str | None]  # per job: the budget it draws on, if any
    budget_remaining_usd: Mapping[str, float]
    settings: ProblemSettings
    dataset_index: Mapping[str, int] = field(default_factory=dict)  # dataset id -> row of dataset_source
    dataset_source: I32 = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int32))  # [dataset, to] -> from
    # One copy of a dataset to a site, whoever reads it there (what jobs of a plan can share):
    dataset_egress_usd: F64 = field(default_factory=lambda: np.zeros((0, 0)))  # [dataset, site]
    dataset_storage_usd: F64 = field(default_factory=lambda: np.zeros((0, 0)))  # [dataset, site]
    dataset_transfer_s: F64 = field(default_factory=lambda: np.zeros((0, 0)))  # [dataset, site]
    job_dataset: tuple[I32, I32] = field(  # (job row, dataset row) per dataset a job reads
        default_factory=lambda: (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32))
    )
    submitted_at: F64 = field(default_factory=lambda: np.zeros(0))  # per job; waiting limits count from it
    release: ReleaseTimeline | None = None  # when running jobs give their GPUs back (placers.waiting)

    @property
    def n_jobs(self) -> int:
        return len(self.specs)

    @property
    def n_options(self) -> int:
        return len(self.options)

    @functools.cached_property
    def total_usd(self) -> F64:
        return self.compute_usd + self.egress_usd + self.storage_usd

    @functools.cached_property
    def finish_at(self) -> F64:
        return self.now + self.transfer_s + self.runtime_s

    def static_ok(self) -> B:
        """Options that satisfy every permanent rule (capacity aside). Computed once; do not mutate."""
        return self._static_ok

    @functools.cached_property
    def _static_ok(self) -> B:
        ok: B = (self.reasons & int(PERMANENT)) == 0
        return ok

    def never_fits(self) -> B:
        """Jobs no option could ever take: reject them."""
        return np.logical_not(self.static_ok().any(axis=1))

    def option_label(self, o: int) -> str:
        pool = self.catalog.pools[int(self.options.pool[o])]
        return f"{pool.key}{' (spot)' if self.options.spot[o] else ''}"

    def data_moves(self, j: int, o: int) -> tuple[DataMove, ...]:
        """The dataset copies option `o` implies for job `j` (full cost, not shared)."""
        site = int(self.options.site[o])
        moves = []
        for d in self.datasets[j]:
            src = int(self.dataset_source[self.dataset_index[d.id], site])
            if src == site:
                continue
            cat = self.catalog
            moves.append(
                DataMove(
                    dataset_id=d.id,
                    from_site=cat.sites[src].name,
                    to_site=cat.sites[site].name,
                    size_gb=d.size_gb,
                    egress_usd=d.size_gb * float(cat.egress_usd_per_gb[src, site]),
                    transfer_s=d.size_gb * 8.0 / float(cat.bandwidth_gbps[src, site]),
                )
            )
        return tuple(moves)

    def placement(
        self,
        j: int,
        o: int,
        bindings: tuple[NodeBinding, ...],
        cost: CostBreakdown | None = None,
        data_moves: tuple[DataMove, ...] | None = None,
        start_at: UnixSeconds | None = None,
        explanation: str = "",
    ) -> Placement:
        """The domain Placement for job j on option o (the problem's own estimate unless overridden)."""
        pool = self.catalog.pools[int(self.options.pool[o])]
        start = self.now if start_at is None else start_at
        transfer = float(self.transfer_s[j, o])
        finish = None
        if self.specs[j].kind is not JobKind.INFERENCE:
            finish = start + transfer + float(self.runtime_s[j, o])
        return Placement(
            site=pool.site,
            pool=pool.name,
            gpu_model=pool.gpu_model,
            spot=bool(self.options.spot[o]),
            start_at=start,
            finish_at=finish,
            cost=cost
            or CostBreakdown(
                float(self.compute_usd[j, o]), float(self.egress_usd[j, o]), float(self.storage_usd[j, o])
            ),
            transfer_s=transfer,
            bindings=bindings,
            data_moves=self.data_moves(j, o) if data_moves is None else data_moves,
            explanation=explanation,
        )


def build_problem(
    catalog: Catalog,
    specs: Sequence[JobSpec],
    job_ids: Sequence[str],
    datasets: Sequence[Sequence[Dataset]],
    capacity: CapacityState,
    now: UnixSeconds,
    *,
    extra_replicas: Mapping[str, Sequence[str]] | None = None,
    unavailable_sites: frozenset[str] = frozenset(),
    budget_remaining_usd: Mapping[str, float] | None = None,
    budget_tag: str = "cost_center",
    budget_keys: Sequence[str | None] | None = None,
    settings: ProblemSettings | None = None,
    options: Options | None = None,
    submitted_at: Sequence[UnixSeconds] | None = None,
    release: ReleaseTimeline | None = None,
) -> PlacementProblem:
    """Cost and check every job against every option. `datasets[j]` are job j's resolved datasets;
    `extra_replicas` adds cached copies (dataset id -> sites) recorded by the scheduler;
    `submitted_at` (default: now) and `release` (expected releases of running jobs) feed the
    waiting rule (placers.waiting). A job draws on the budget named by its `budget_tag` tag, or on
    `budget_keys[j]` when given (the scheduler's FinOps budgets name each job's most constraining
    budget that way)."""
    settings = settings or ProblemSettings()
    opts = options or Options.of(catalog)
    n_jobs, n_opts, n_sites = len(specs), len(opts), len(catalog.sites)
    for name, seq in (("job_ids", job_ids), ("datasets", datasets), ("submitted_at", submitted_at)):
        if seq is not None and len(seq) != n_jobs:
            raise ValueError(f"{name}: {len(seq)} entries for {n_jobs} jobs")
    extra_replicas = extra_replicas or {}
    budgets = dict(budget_remaining_usd or {})

    # ---- per-job vectors
    gpus = np.array([s.total_gpus * s.gpu_milli / FULL for s in specs], dtype=np.float64)
    per_node_gpus = np.array([s.gpus for s in specs], dtype=np.int32)
    single = np.array([s.single_node for s in specs], dtype=bool)
    ref_runtime = np.array([settings.service_horizon_s if s.kind is JobKind.INFERENCE else s.runtime_s for s in specs])
    deadline = np.array([s.deadline_at if s.deadline_at is not None else np.inf for s in specs])
    max_cost = np.array([s.max_cost_usd if s.max_cost_usd is not None else np.inf for s in specs])
    spot_ok = np.array([s.spot_ok for s in specs], dtype=bool)
    inference = np.array([s.kind is JobKind.INFERENCE for s in specs], dtype=bool)
    wants_dedicated = np.array([bool(s.inference and s.inference.dedicated) for s in specs], dtype=bool)
    priority = np.array([s.priority for s in specs], dtype=np.int32)
    cpus = np.array([s.cpus for s in specs])
    mem = np.array([s.memory_gb for s in specs])

    reasons = np.zeros((n_jobs, n_opts), dtype=np.int32)

    # ---- runtime and compute cost
    runtime = ref_runtime[:, None] / opts.speed[None, :]
    compute = gpus[:, None] * (runtime / 3600.0) * opts.usd_per_gpu_hour[None, :]

    # ---- GPU model (rows shared between jobs with the same allowed list)
    model_rows: dict[tuple[str, ...], npt.NDArray[np.int32]] = {}
    model_bits = np.zeros((n_jobs, n_opts), dtype=np.int32)
    for j, s in enumerate(specs):
        if s.gpu_models:
            row = model_rows.get(s.gpu_models)
            if row is None:
                ok = np.array([m in s.gpu_models for m in opts.model_names])
                row = np.where(ok[opts.model], 0, int(Reason.GPU_MODEL)).astype(np.int32)
                model_rows[s.gpu_models] = row
            model_bits[j] = row
    reasons |= model_bits

    # ---- node shape, pool size, CPU / memory per node
    cpus_node, mem_node = opts.node_cpus, opts.node_memory_gb
    gpn = opts.gpus_per_node[None, :]
    shape_bad = (single[:, None] & (per_node_gpus[:, None] > gpn)) | (gpus[:, None] > opts.max_gpus[None, :])
    nodes_needed = np.maximum(1, np.ceil(per_node_gpus[:, None] / gpn))
    if cpus.any() or mem.any():  # jobs that ask for no CPU or memory fit any node's
        shape_bad |= (cpus[:, None] / nodes_needed > cpus_node[None, :]) | (
            mem[:, None] / nodes_needed > mem_node[None, :]
        )
    reasons |= np.where(shape_bad, int(Reason.NODE_SHAPE), 0).astype(np.int32)

    # ---- spot and dedicated hardware
    if not spot_ok.all():
        reasons |= np.where(opts.spot[None, :] & ~spot_ok[:, None], int(Reason.SPOT), 0).astype(np.int32)
    if opts.dedicated.any() or wants_dedicated.any():
        batch_on_dedicated = ~inference[:, None] & opts.dedicated[None, :]
        needs_dedicated = wants_dedicated[:, None] & ~(opts.dedicated | opts.elastic)[None, :]
        reasons |= np.where(batch_on_dedicated | needs_dedicated, int(Reason.DEDICATED), 0).astype(np.int32)

    # ---- site rules: allowed sites / jurisdictions, latency, availability (jobs x sites)
    static = _static(catalog)
    site_names, site_jur, rtt, region_index = static.site_names, static.site_jur, static.rtt, static.region_index
    rule_rows: dict[tuple[object, ...], npt.NDArray[np.int32]] = {}
    site_bits = np.zeros((n_jobs, n_sites), dtype=np.int32)
    for j, s in enumerate(specs):
        inf_spec = s.inference
        slo = (inf_spec.latency_slo_ms, inf_spec.user_regions) if inf_spec and inf_spec.latency_slo_ms > 0 else None
        rule = (s.allowed_sites, s.allowed_jurisdictions, slo)
        if rule == ((), (), None):
            continue
        row = rule_rows.get(rule)
        if row is None:
            row = np.zeros(n_sites, dtype=np.int32)
            if s.allowed_sites:
                row |= np.where([n in s.allowed_sites for n in site_names], 0, int(Reason.SITE_NOT_ALLOWED))
            if s.allowed_jurisdictions:
                row |= np.where([x in s.allowed_jurisdictions for x in site_jur], 0, int(Reason.JURISDICTION))
            if slo is not None and slo[1]:
                cols = [region_index[r] for r in slo[1] if r in region_index]
                worst = rtt[:, cols].max(axis=1) if cols else np.full(n_sites, np.inf)
                row |= np.where(worst <= slo[0], 0, int(Reason.LATENCY))
            rule_rows[rule] = row
        site_bits[j] = row
    if unavailable_sites:
        down = np.array([n in unavailable_sites for n in site_names])
        site_bits[:, down] |= int(Reason.SITE_UNAVAILABLE)

    # ---- data gravity: cheapest replica per (dataset, site), summed per job; residency per dataset
    egress_js = np.zeros((n_jobs, n_sites))
    storage_js = np.zeros((n_jobs, n_sites))
    transfer_js = np.zeros((n_jobs, n_sites))
    unique: dict[str, Dataset] = {}
    for ds in datasets:
        for d in ds:
            unique.setdefault(d.id, d)
    ids = list(unique)
    d_index = {did: i for i, did in enumerate(ids)}
    src = np.zeros((len(ids), n_sites), dtype=np.int32)
    ds_egress = np.zeros((len(ids), n_sites))
    ds_storage = np.zeros((len(ids), n_sites))
    ds_transfer = np.zeros((len(ids), n_sites))
    inc_job = np.zeros(0, dtype=np.int64)
    inc_ds = np.zeros(0, dtype=np.int64)
    if unique:
        size = np.array([unique[did].size_gb for did in ids])
        rows = []
        for did in ids:
            d = unique[did]
            held = {
                catalog.site_index[r]
                for r in (*d.replica_sites, *extra_replicas.get(did, ()))
                if r in catalog.site_index
            }
            rows.append(static.replica_rows(tuple(sorted(held))))
        holds = np.array([r[0] for r in rows])
        src = np.array([r[1] for r in rows], dtype=np.int32)
        rate = np.array([r[2] for r in rows])
        sec_per_gb = np.array([r[3] for r in rows])
        residency = np.array([static.residency_row(unique[did].classification) for did in ids], dtype=np.int32)
        storage_price = static.storage_price
        ttl_months = settings.replica_ttl_s / SECONDS_PER_MONTH
        store_ds = np.where(holds, 0.0, size[:, None] * storage_price[None, :] * ttl_months)
        inc_job = np.array([j for j, ds in enumerate(datasets) for _ in ds], dtype=np.int64)
        inc_ds = np.array([d_index[d.id] for ds in datasets for d in ds], dtype=np.int64)
        ds_egress = size[:, None] * rate
        ds_storage = store_ds
        ds_transfer = size[:, None] * sec_per_gb
        np.add.at(egress_js, inc_job, ds_egress[inc_ds])
        np.add.at(storage_js, inc_job, ds_storage[inc_ds])
        np.add.at(transfer_js, inc_job, ds_transfer[inc_ds])
        np.bitwise_or.at(site_bits, inc_job, residency[inc_ds])
    reasons |= site_bits[:, opts.site]
    egress = egress_js[:, opts.site]
    storage = storage_js[:, opts.site]
    transfer = transfer_js[:, opts.site]

    # ---- deadline, cost cap
    if np.isfinite(deadline).any():
        finish = now + transfer + runtime
        reasons |= np.where(finish > deadline[:, None], int(Reason.DEADLINE), 0).astype(np.int32)
    total = compute + egress + storage
    if np.isfinite(max_cost).any():
        reasons |= np.where(total > max_cost[:, None] * (1 + 1e-9), int(Reason.MAX_COST), 0).astype(np.int32)

    # ---- capacity right now (placers track what they consume on top of this)
    demands = [Demand.of(s) for s in specs]
    fits_now = capacity_fits(capacity, opts, demands)
    reasons |= np.where(fits_now, 0, int(Reason.CAPACITY)).astype(np.int32)

    if budget_keys is not None:
        budget_key = [k if k in budgets else None for k in budget_keys]
    else:
        budget_key = [s.tags.get(budget_tag) if s.tags.get(budget_tag) in budgets else None for s in specs]
    for j, key_ in enumerate(budget_key):
        if key_ is not None:
            reasons[j] |= np.where(total[j] > budgets[key_] + 1e-9, int(Reason.BUDGET), 0).astype(np.int32)

    return PlacementProblem(
        catalog=catalog,
        options=opts,
        specs=specs,
        job_ids=job_ids,
        datasets=datasets,
        now=now,
        capacity=capacity,
        demands=demands,
        priority=priority,
        deadline_at=deadline,
        runtime_s=runtime,
        compute_usd=compute,
        egress_usd=egress,
        storage_usd=storage,
        transfer_s=transfer,
        reasons=reasons,
        budget_key=budget_key,
        budget_remaining_usd=budgets,
        settings=settings,
        dataset_index=d_index,
        dataset_source=src,
        dataset_egress_usd=ds_egress,
        dataset_storage_usd=ds_storage,
        dataset_transfer_s=ds_transfer,
        job_dataset=(inc_job.astype(np.int32), inc_ds.astype(np.int32)),
        submitted_at=np.full(n_jobs, now) if submitted_at is None else np.asarray(submitted_at, dtype=np.float64),
        release=release,
    )


class _CatalogStatic:
    """Facts of one catalog that every problem reuses, worked out once: which replica serves
    each destination for a given set of sites holding a dataset, and residency rows."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.n_sites = len(catalog.sites)
        self.site_names = [s.name for s in catalog.sites]
        self.site_jur = [s.jurisdiction for s in catalog.sites]
        self.rtt = np.array([[s.rtt_ms.get(r, np.inf) for r in catalog.user_regions] for s in catalog.sites])
        self.rtt.setflags(write=False)
        self.region_index = {r: i for i, r in enumerate(catalog.user_regions)}
        self.storage_price = np.array([s.storage_usd_per_gb_month for s in catalog.sites])
        self.storage_price.setflags(write=False)
        self._replica: dict[tuple[int, ...], tuple[B, I32, F64, F64]] = {}
        self._residency: dict[str, I32] = {}

    def replica_rows(self, held: tuple[int, ...]) -> tuple[B, I32, F64, F64]:
        """For a dataset held at sites `held`: (holds, source site, USD/GB, s/GB) per destination.
        Cheapest source per destination; ties broken by bandwidth, then site index."""
        hit = self._replica.get(held)
        if hit is None:
            n = self.n_sites
            holds = np.zeros(n, dtype=bool)
            holds[list(held)] = True
            cat = self.catalog
            rate_all = np.where(holds[:, None], cat.egress_usd_per_gb, np.inf)  # [from, to]
            secs_all = np.where(holds[:, None], 8.0 / cat.bandwidth_gbps, np.inf)
            src = (rate_all * 1e6 + np.minimum(secs_all, 1e5)).argmin(axis=0).astype(np.int32)  # [to]
            to = np.arange(n)
            rate = np.where(holds, 0.0, rate_all[src, to])
            sec = np.where(holds, 0.0, secs_all[src, to])
            src = np.where(holds, to, src).astype(np.int32)
            for a in (holds, src, rate, sec):
                a.setflags(write=False)
            hit = self._replica[held] = (holds, src, rate, sec)
        return hit

    def residency_row(self, classification: str) -> I32:
        row = self._residency.get(classification)
        if row is None:
            allowed = self.catalog.allowed_jurisdictions(classification)
            row = np.zeros(self.n_sites, dtype=np.int32)
            if allowed is not None:
                row = np.where([x in allowed for x in self.site_jur], 0, int(Reason.RESIDENCY)).astype(np.int32)
            row.setflags(write=False)
            self._residency[classification] = row
        return row


_STATIC: dict[int, _CatalogStatic] = {}


def _static(catalog: Catalog) -> _CatalogStatic:
    hit = _STATIC.get(id(catalog))
    if hit is None or hit.catalog is not catalog:
        if len(_STATIC) > 64:
            _STATIC.clear()
        hit = _STATIC[id(catalog)] = _CatalogStatic(catalog)
    return hit


def capacity_fits(capacity: CapacityState, opts: Options, demands: Sequence[Demand]) -> B:
    """[J, O]: would each job fit each option's pool with the capacity free now (ignoring the others)?"""
    free_milli, max_node = capacity.pool_summary()
    total = np.array([d.total_milli for d in demands], dtype=np.int64)
    per_node = np.array([d.gpus if d.single_node and d.gpu_milli == FULL else 0 for d in demands], dtype=np.int64)
    fits = total[:, None] <= free_milli[opts.pool][None, :]
    fits &= per_node[:, None] <= max_node[opts.pool][None, :]
    # Shared-GPU jobs need one slot with enough milli free; check those rows exactly.
    for j, d in enumerate(demands):
        if d.gpu_milli < FULL or d.replicas > 1:
            for p in np.unique(opts.pool[fits[j]]):
                if capacity.find(int(p), d) is None:
                    fits[j, opts.pool == p] = False
    return fits
