"""The job state machine, shared by every store: which update may follow which state."""

from __future__ import annotations

from placers.domain import Attempt, Job, JobState, Placement, UnixSeconds
from scheduler.store.base import EventKind, JobQuery, JobUpdate

_EVENT_OF = {
    JobState.RUNNING: EventKind.RUNNING,
    JobState.SUCCEEDED: EventKind.SUCCEEDED,
    JobState.FAILED: EventKind.FAILED,
    JobState.CANCELLED: EventKind.CANCELLED,
}


def placed(job: Job, placement: Placement, decided_at: UnixSeconds) -> Job:
    """A pending job after a committed placement: a new attempt starts, in state placed."""
    attempt = Attempt(len(job.attempts) + 1, placement.site, placement.start_at, state=JobState.PLACED)
    return job.evolve(
        state=JobState.PLACED,
        placement=placement,
        reason="",
        updated_at=placement.start_at,
        attempts=(*job.attempts, attempt),
        decided_at=job.decided_at or decided_at,
    )


def rejected(job: Job, reason: str, decided_at: UnixSeconds) -> Job:
    return job.evolve(
        state=JobState.REJECTED,
        reason=reason,
        finished_at=decided_at,
        updated_at=decided_at,
        decided_at=job.decided_at or decided_at,
    )


def waiting(job: Job, reason: str, decided_at: UnixSeconds) -> Job | None:
    """A pending job with a new waiting reason; None when nothing changes (no event)."""
    if job.state is not JobState.PENDING or job.reason == reason:
        return None
    return job.evolve(reason=reason, decided_at=job.decided_at or decided_at)


def apply_update(job: Job, u: JobUpdate) -> tuple[Job, EventKind] | None:
    """The job after `u`, and the event it makes; None when `u` is stale or not allowed."""
    if job.state.terminal:
        return None
    current = len(job.attempts)
    if u.attempt is not None and u.attempt != current:
        return None  # about an attempt that is already over
    if u.state is JobState.CANCELLED:
        attempts = _end_attempt(job, u, JobState.CANCELLED) if job.state.holds_capacity else job.attempts
        return (
            job.evolve(
                state=JobState.CANCELLED,
                reason=u.reason or f"cancelled by {u.cancelled_by or 'a client'}",
                cancelled_by=u.cancelled_by,
                updated_at=u.at,
                finished_at=u.at,
                attempts=attempts,
                **_NO_SERVICE,
            ),
            EventKind.CANCELLED,
        )
    if not job.state.holds_capacity:
        return None  # execution news about a job that is not placed
    if u.state is JobState.RUNNING:
        service = _service_changes(job, u)
        if job.state is JobState.RUNNING:
            if not service:
                return None
            return job.evolve(updated_at=u.at, **service), EventKind.HEALTH
        last = job.attempts[-1]
        started = Attempt(last.number, last.site, last.launched_at, state=JobState.RUNNING)
        return (
            job.evolve(
                state=JobState.RUNNING,
                started_at=job.started_at or u.at,
                updated_at=u.at,
                attempts=(*job.attempts[:-1], started),
                **service,
            ),
            EventKind.RUNNING,
        )
    if u.state in (JobState.SUCCEEDED, JobState.FAILED):
        attempts = _end_attempt(job, u, u.state)
        if u.state is JobState.FAILED and u.requeue:
            return (
                job.evolve(
                    state=JobState.PENDING,
                    placement=None,
                    reason=f"attempt {current} failed: {u.reason or 'exit code ' + str(u.exit_code)}; retrying",
                    updated_at=u.at,
                    exit_code=u.exit_code,
                    log_tail=u.log_tail,
                    attempts=attempts,
                    **_NO_SERVICE,
                ),
                EventKind.RETRYING,
            )
        return (
            job.evolve(
                state=u.state,
                reason=u.reason,
                exit_code=u.exit_code,
                log_tail=u.log_tail,
                updated_at=u.at,
                finished_at=u.at,
                attempts=attempts,
                **_NO_SERVICE,
            ),
            _EVENT_OF[u.state],
        )
    return None


_NO_SERVICE: dict[str, object] = {"health": "", "endpoint": "", "replicas_ready": 0}


def _service_changes(job: Job, u: JobUpdate) -> dict[str, object]:
    """The service fields `u` changes (health, endpoint, replicas ready)."""
    out: dict[str, object] = {}
    for name in ("health", "endpoint", "replicas_ready"):
        value = getattr(u, name)
        if value is not None and value != getattr(job, name):
            out[name] = value
    return out


def _end_attempt(job: Job, u: JobUpdate, state: JobState) -> tuple[Attempt, ...]:
    if not job.attempts:
        return job.attempts
    last = job.attempts[-1]
    ended = Attempt(last.number, last.site, last.launched_at, u.at, state, u.exit_code, u.reason)
    return (*job.attempts[:-1], ended)


def matches(job: Job, q: JobQuery) -> bool:
    if q.states and job.state not in q.states:
        return False
    if q.site and (job.placement is None or job.placement.site != q.site):
        return False
    return all(job.spec.tags.get(k) == v for k, v in q.tags.items())
