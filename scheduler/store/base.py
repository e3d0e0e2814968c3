"""The store protocol: the scheduler's only state.

Memory and Redis implementations pass the same contract tests (tests/contract/test_store.py).

Concurrency model (after Nomad): the scheduler reads a `Snapshot` carrying a `version`,
decides, and commits a `Plan` built on that version. `commit` applies the whole plan or
nothing; it refuses a plan whose base version is stale (someone placed, released or
cancelled in between), and the scheduler replans. Submissions do not bump the version:
new pending work never invalidates a plan.

Replicas (after Chubby/ZooKeeper fencing): one leader at a time holds a lease in the store and
gets an *epoch* (fencing token) that grows with every new holder. A plan carries the epoch that
made it and every launch is first *claimed* in the store at that epoch; both are refused once a
newer leader exists, so a paused or partitioned old leader can neither commit nor launch.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from placers.capacity import CapacityState
from placers.domain import Job, JobState, Placement, UnixSeconds
from scheduler.finops.model import AuditEntry, AuditQuery, Budget, BudgetAlert


class StoreError(RuntimeError):
    """The store cannot answer now (connection lost, timeout): the caller may retry."""


class SchemaError(RuntimeError):
    """The store holds data this version of Gravity does not understand: operator action needed."""


class EventKind(enum.StrEnum):
    SUBMITTED = "submitted"
    WAITING = "waiting"  # still pending, with a (new) reason
    PLACED = "placed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    RETRYING = "retrying"  # an attempt failed; back to pending
    HEALTH = "health"  # a running service's health, endpoint or ready replicas changed


@dataclass(frozen=True, slots=True)
class JobEvent:
    seq: int
    kind: EventKind
    job: Job
    at: UnixSeconds


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    capacity: CapacityState  # a private copy: the caller may mutate it
    replicas: Mapping[str, Mapping[str, UnixSeconds]]  # dataset id -> site -> cached copy expires at
    allocations: Mapping[str, Placement]  # job id -> placement of every placed or running job


@dataclass(frozen=True)
class Plan:
    """A batch of decisions computed from the snapshot at `base_version`."""

    base_version: int
    placements: Mapping[str, Placement] = field(default_factory=dict)  # pending -> placed
    rejections: Mapping[str, str] = field(default_factory=dict)  # pending -> rejected, with reason
    waits: Mapping[str, str] = field(default_factory=dict)  # stays pending; new reason
    new_replicas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # dataset -> new cached sites
    replica_expires_at: UnixSeconds = 0.0
    epoch: int = 0  # leader epoch that made the plan (0 = no leader election)
    decided_at: UnixSeconds = 0.0  # when the plan was made
    audit: tuple[AuditEntry, ...] = ()  # the decisions' audit trail: appended if and only if the plan applies


class ClaimVerdict(enum.StrEnum):
    LAUNCH = "launch"  # recorded: call the executor (again, at the same epoch: launch is idempotent)
    FENCED = "fenced"  # the epoch is not the current lease's: this process is not the leader
    NOT_PLACED = "not_placed"  # the job is no longer placed at that attempt (cancelled, retried, unknown)
    CLAIMED = "claimed"  # another epoch claimed this attempt: only the executor knows whether it started


@dataclass(frozen=True, slots=True)
class LaunchClaim:
    """The outcome of claiming one launch; `job` is the job as placed (for LAUNCH and CLAIMED)."""

    job_id: str
    attempt: int
    verdict: ClaimVerdict
    job: Job | None = None
    claimed_epoch: int = 0  # who holds the claim (the caller's epoch for LAUNCH)


@dataclass(frozen=True, slots=True)
class JobQuery:
    states: frozenset[JobState] = frozenset()
    site: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    page_size: int = 100
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """A state change reported by execution or by a client (cancel). Applied by `Store.update`."""

    job_id: str
    state: JobState
    at: UnixSeconds
    reason: str = ""
    exit_code: int | None = None
    log_tail: str = ""
    attempt: int | None = None  # the attempt the event is about; stale attempts are ignored
    cancelled_by: str = ""
    requeue: bool = False  # FAILED with retries left: back to pending instead of failed
    audit: tuple[AuditEntry, ...] = ()  # appended if and only if the update applies (e.g. who cancelled)
    # RUNNING news about a service (None: unchanged): see Job.health, Job.endpoint, Job.replicas_ready
    health: str | None = None
    endpoint: str | None = None
    replicas_ready: int | None = None


class Store(Protocol):
    def submit(self, jobs: Sequence[Job]) -> list[tuple[Job, bool]]:
        """Durably add jobs as pending. Idempotent by spec.request_id: a request id seen before
        returns the existing job and False. Returns (job, created) in input order."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """`get` for each id, in order (one round trip where the backend allows)."""
        ...

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], str]:
        """Jobs matching the query, newest first, and the next page token ("" at the end)."""
        ...

    def pending(self, limit: int, offset: int = 0) -> list[Job]:
        """Pending jobs in queue order (priority tier high first, then the order they joined the
        queue; a retried job joins the back of its tier), `limit` of them from position `offset`."""
        ...

    def pending_since(self, cursor: int, limit: int) -> tuple[list[Job], int]:
        """The pending jobs that joined the queue after `cursor` (0: all of them), in queue order,
        and the cursor to pass next time. Jobs decided "waiting" stay in the queue without joining
        it again, so a scheduler that asks this every cycle sees each new or retried job once and
        never rescans its backlog. When more than `limit` joined, the first `limit` come back with
        the same cursor (the rest come next time, with those of the first still pending)."""
        ...

    def snapshot(self) -> Snapshot: ...

    def commit(self, plan: Plan) -> bool:
        """Apply the whole plan if nothing changed since plan.base_version; else False, nothing applied."""
        ...

    def update(self, update: JobUpdate) -> Job | None:
        """Apply an execution or cancel transition; releases capacity when the job stops holding it.
        Returns the job after the change, or None when the update is stale or the job unknown."""
        ...

    def update_many(self, updates: Sequence[JobUpdate]) -> list[Job | None]:
        """`update` for each, in order: a later update sees the earlier ones (one batch per cycle)."""
        ...

    def claim_launches(self, epoch: int, claims: Sequence[tuple[str, int]]) -> list[LaunchClaim]:
        """Durably record that the leader at `epoch` launches these (job id, attempt) now, before it
        calls the executor. Refused (FENCED) unless `epoch` is the current lease's epoch (0: allowed
        only while nobody holds the lease); NOT_PLACED unless the job is placed at that attempt;
        CLAIMED when another epoch claimed the attempt first. A claim repeated at the same epoch is
        granted again (the executor's launch is idempotent by launch id)."""
        ...

    def acquire_lease(self, holder: str, ttl_s: float) -> int:
        """Take, or renew, the leader lease for `holder` for ttl_s seconds. Returns the lease's epoch
        (> 0), or 0 while another holder has it. A holder taking a free or expired lease always gets
        a new epoch, larger than any before."""
        ...

    def release_lease(self, holder: str) -> None:
        """Give the lease up now (clean shutdown) if `holder` has it, so a follower takes over at once."""
        ...

    def events(self, after_seq: int, job_id: str = "", timeout_s: float = 0.0) -> list[JobEvent]:
        """Events with seq > after_seq (optionally one job's), waiting up to timeout_s for the first."""
        ...

    def last_seq(self) -> int: ...

    def counts(self) -> Mapping[JobState, int]: ...

    # ---- FinOps: budgets (versioned documents), alerts fired (append-only, once each), audit (append-only)

    def put_budget(self, budget: Budget, expected_version: int, audit: AuditEntry | None = None) -> Budget:
        """Compare-and-set: store `budget` if the stored one is at `expected_version` (0 = must not exist).
        Returns it at version expected_version + 1; raises VersionMismatch otherwise. `audit` is
        appended in the same operation, only when the write happens."""
        ...

    def delete_budget(self, budget_id: str, expected_version: int = 0, audit: AuditEntry | None = None) -> Budget:
        """Remove a budget (at `expected_version`, or any version when 0); returns what was removed.
        Raises VersionMismatch (actual 0 when there is no such budget)."""
        ...

    def get_budget(self, budget_id: str) -> Budget | None: ...

    def list_budgets(self) -> list[Budget]:
        """Every budget, ordered by id."""
        ...

    def record_alert(self, alert: BudgetAlert) -> BudgetAlert | None:
        """Append the alert unless one with the same (budget_id, period, threshold) was recorded before:
        the stored alert with its seq, or None when it already fired (so it is sent once, across restarts)."""
        ...

    def alerts(
        self, after_seq: int, timeout_s: float = 0.0, budget_id: str = "", period: str = ""
    ) -> list[BudgetAlert]:
        """Alerts with seq > after_seq (optionally one budget's, one period's), waiting up to timeout_s."""
        ...

    def last_alert_seq(self) -> int: ...

    def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Audit entries matching the query, in append (seq) order, at most query.limit."""
        ...

    def close(self) -> None: ...
