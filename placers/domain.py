"""Gravity's domain vocabulary: jobs, datasets, tags, placements.

Plain frozen dataclasses with units in their names. Times are Unix seconds (float);
durations are seconds; money is USD (float) here and integer micro-dollars inside solvers.
Nothing in this module knows about protobuf, Redis or Ray.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

UnixSeconds = float

#: Tag keys every job may carry with a first-class meaning; any other key is free-form.
WELL_KNOWN_TAGS: tuple[str, ...] = ("project", "cost_center", "team", "workload_type", "stage")

#: Classification of a dataset that carries no residency restriction.
PUBLIC = "public"


class JobKind(enum.StrEnum):
    TRAINING = "training"
    BATCH = "batch"
    INFERENCE = "inference"


class JobState(enum.StrEnum):
    PENDING = "pending"
    PLACED = "placed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def holds_capacity(self) -> bool:
        """A placed or running job holds GPUs at its site until it ends."""
        return self in (JobState.PLACED, JobState.RUNNING)


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED})


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named body of data a job reads, with the sites that hold a copy of it."""

    id: str
    size_gb: float
    replica_sites: tuple[str, ...]
    classification: str = PUBLIC


@dataclass(frozen=True, slots=True)
class InferenceSpec:
    """What a long-running inference service needs beyond GPUs."""

    latency_slo_ms: float = 0.0  # 0 = no latency objective
    user_regions: tuple[str, ...] = ()
    replicas: int = 1
    dedicated: bool = False  # needs capacity that batch work cannot take
    spread: bool = False  # replicas on distinct nodes


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a client says about a job. Validated at admission (scheduler.admission)."""

    name: str
    kind: JobKind
    gpus: int
    entrypoint: str
    gpu_milli: int = 1000  # share of each GPU in thousandths; < 1000 only for one shared GPU
    gpu_models: tuple[str, ...] = ()  # empty = any model
    cpus: float = 0.0
    memory_gb: float = 0.0
    single_node: bool = False  # all GPUs on one node (gang)
    runtime_s: float = 3600.0  # estimated runtime on the catalog's reference GPU
    deadline_at: UnixSeconds | None = None
    priority: int = 0  # tier: higher is more important
    tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[str | Dataset, ...] = ()  # catalog dataset ids, or datasets described inline
    allowed_jurisdictions: tuple[str, ...] = ()  # empty = any
    allowed_sites: tuple[str, ...] = ()  # empty = any
    max_cost_usd: float | None = None
    spot_ok: bool = False
    inference: InferenceSpec | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    max_retries: int = 0

    @property
    def gpu_equivalents(self) -> float:
        """GPUs weighted by the shared fraction: what the job occupies."""
        return self.gpus * self.gpu_milli / 1000.0

    @property
    def replicas(self) -> int:
        return self.inference.replicas if self.inference else 1

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.replicas


@dataclass(frozen=True, slots=True)
class NodeBinding:
    """GPUs taken on one node of an on-prem pool: which GPU slots, each at `gpu_milli`."""

    node: int
    gpu_slots: tuple[int, ...]
    gpu_milli: int = 1000
    cpu_milli: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class DataMove:
    """A dataset copied to the job's site for it (or shared with other jobs of the same plan)."""

    dataset_id: str
    from_site: str
    to_site: str
    size_gb: float
    egress_usd: float  # this job's share
    transfer_s: float


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    compute_usd: float = 0.0
    egress_usd: float = 0.0
    storage_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.egress_usd + self.storage_usd


@dataclass(frozen=True, slots=True)
class Placement:
    """One job -> site decision, with the estimate it was made on."""

    site: str
    pool: str
    gpu_model: str
    spot: bool
    start_at: UnixSeconds
    finish_at: UnixSeconds | None  # None for long-running services
    cost: CostBreakdown
    transfer_s: float
    bindings: tuple[NodeBinding, ...] = ()  # empty for elastic (cloud) pools
    data_moves: tuple[DataMove, ...] = ()
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One launch of a job; a retried job has several."""

    number: int
    site: str
    launched_at: UnixSeconds
    ended_at: UnixSeconds | None = None
    state: JobState = JobState.RUNNING
    exit_code: int | None = None
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    spec: JobSpec
    state: JobState
    created_at: UnixSeconds
    updated_at: UnixSeconds
    placement: Placement | None = None
    reason: str = ""  # why it is pending, rejected or failed
    started_at: UnixSeconds | None = None
    finished_at: UnixSeconds | None = None
    exit_code: int | None = None
    log_tail: str = ""
    attempts: tuple[Attempt, ...] = ()
    cancelled_by: str = ""
    decided_at: UnixSeconds | None = None  # first scheduling decision: placed, waiting or rejected
    # A running service (inference), as its executor last reported it; empty otherwise.
    health: str = ""  # starting | healthy | degraded | unhealthy
    endpoint: str = ""  # host:port of each ready replica, comma-separated
    replicas_ready: int = 0

    def evolve(self, **changes: object) -> Job:
        """A copy with some fields changed: what dataclasses.replace does. Replaced below by
        straight-line code made from the fields (_make_evolve)."""
        raise NotImplementedError


_KEEP = object()


def _make_evolve(cls: type) -> Callable[..., Any]:
    """`evolve(self, *, field=...)` as straight-line code, one keyword per field defaulting to the
    current value, each slot written through its descriptor (a frozen dataclass forbids setattr).
    dataclasses.replace re-reads the fields and runs __init__ on every call: several times slower,
    and a job changes state several times per decision while a replay makes 100k of them."""
    names = [f.name for f in fields(cls)]
    params = ", ".join(f"{n}=_KEEP" for n in names)
    body = "".join(f"    _set_{n}(new, self.{n} if {n} is _KEEP else {n})\n" for n in names)
    namespace: dict[str, Any] = {"_KEEP": _KEEP, "_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{n}": getattr(cls, n).__set__ for n in names})
    exec(f"def evolve(self, *, {params}):\n    new = _new(_cls)\n{body}    return new\n", namespace)
    evolve: Callable[..., Any] = namespace["evolve"]
    evolve.__doc__ = Job.evolve.__doc__
    return evolve


setattr(Job, "evolve", _make_evolve(Job))  # noqa: B010 (mypy: a method cannot be assigned)
