"""The executor protocol: how placed work is started, stopped and observed.

Small on purpose (launch, cancel, poll, active) so the Ray executor and the simulator's
executor are interchangeable. `launch` is idempotent by `LaunchRequest.launch_id`: calling
it twice for the same attempt never starts a second copy.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from placers.domain import JobSpec, Placement


class ExecEventKind(enum.StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the attempt ended badly (non-zero exit, worker or node lost)
    STOPPED = "stopped"  # ended because Gravity cancelled it


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    job_id: str
    attempt: int
    spec: JobSpec
    placement: Placement
    epoch: int = 0  # leader fencing token; executors may refuse a stale one

    @property
    def launch_id(self) -> str:
        """Stable across retries of the same launch call; new for a new attempt."""
        return f"{self.job_id}-a{self.attempt}"


@dataclass(frozen=True, slots=True)
class ExecEvent:
    job_id: str
    attempt: int
    kind: ExecEventKind
    at: float
    exit_code: int | None = None
    log_tail: str = ""
    cause: str = ""
    infrastructure: bool = False  # the platform failed (site lost, job lost), not the job: retry for free


class LaunchError(RuntimeError):
    """A launch that did not happen; `retryable` says whether the same site may work later."""

    def __init__(self, message: str, *, retryable: bool = True, site: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.site = site


class Executor(Protocol):
    def launch(self, request: LaunchRequest) -> None:
        """Start the attempt (asynchronously is fine); idempotent by request.launch_id."""
        ...

    def cancel(self, job_id: str) -> None:
        """Stop every attempt of the job; a STOPPED event follows."""
        ...

    def poll(self) -> Sequence[ExecEvent]:
        """Events since the last poll, in order."""
        ...

    def active(self) -> dict[str, int]:
        """Jobs the backend is running now: job id -> attempt (for restart reconciliation)."""
        ...

    def unavailable_sites(self) -> frozenset[str]:
        """Sites whose backend cannot take work now."""
        ...

    def close(self) -> None: ...
