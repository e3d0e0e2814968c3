"""The store protocol: the scheduler's only state.

Memory and Redis implementations pass the same contract tests (tests/contract/test_store.py).

Concurrency model (after Nomad): the scheduler reads a `Snapshot` carrying a `version`,
decides, and commits a `Plan` built on that version. `commit` applies the whole plan or
nothing; it refuses a plan whose base version is stale (someone placed, released or
cancelled in between), and the scheduler replans. Submissions do not bump the version:
new pending work never invalidates a plan.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from placers.capacity import CapacityState
from placers.domain import Job, JobState, Placement, UnixSeconds


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


class Store(Protocol):
    def submit(self, jobs: Sequence[Job]) -> list[tuple[Job, bool]]:
        """Durably add jobs as pending. Idempotent by spec.request_id: a request id seen before
        returns the existing job and False. Returns (job, created) in input order."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], str]:
        """Jobs matching the query, newest first, and the next page token ("" at the end)."""
        ...

    def pending(self, limit: int) -> list[Job]:
        """Pending jobs in queue order (priority tier high first, then submission order)."""
        ...

    def snapshot(self) -> Snapshot: ...

    def commit(self, plan: Plan) -> bool:
        """Apply the whole plan if nothing changed since plan.base_version; else False, nothing applied."""
        ...

    def update(self, update: JobUpdate) -> Job | None:
        """Apply an execution or cancel transition; releases capacity when the job stops holding it.
        Returns the job after the change, or None when the update is stale or the job unknown."""
        ...

    def events(self, after_seq: int, job_id: str = "", timeout_s: float = 0.0) -> list[JobEvent]:
        """Events with seq > after_seq (optionally one job's), waiting up to timeout_s for the first."""
        ...

    def last_seq(self) -> int: ...

    def counts(self) -> Mapping[JobState, int]: ...

    def close(self) -> None: ...
