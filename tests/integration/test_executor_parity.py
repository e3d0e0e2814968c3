"""The simulator's executor and the Ray executor are interchangeable: the same script of jobs
(succeed, fail, retry, cancel, a service) driven through the same SchedulerService gives the same
execution events and the same job histories on both. The sim runs on a virtual clock; Ray for real."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from placers.catalog import Catalog
from placers.domain import InferenceSpec, JobKind, JobSpec, JobState
from placers.registry import make_placer
from scheduler.clock import Clock, ManualClock, WallClock
from scheduler.executors.base import ExecEvent, ExecEventKind, Executor, LaunchRequest
from scheduler.executors.ray_jobs import RayExecutor
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.base import EventKind
from scheduler.store.memory import MemoryStore
from tests.conftest import spec
from tests.integration.conftest import SJC

# mode -> (entrypoint on Ray, exit status the sim gives attempt n)
MODES: dict[str, tuple[str, Callable[[int], int]]] = {
    "succeed": ("echo done", lambda n: 0),
    "fail": ("echo broken; exit 3", lambda n: 3),
    "retry": ('[ "$GRAVITY_ATTEMPT" -gt 1 ] || exit 4; echo second time lucky', lambda n: 4 if n == 1 else 0),
    "cancel": ("exec sleep 600", lambda n: 0),
    "service": ("exec sleep 600", lambda n: 0),
}


def script() -> list[JobSpec]:
    out = []
    for mode, (command, _) in MODES.items():
        service = mode == "service"
        out.append(
            spec(
                name=mode,
                kind=JobKind.INFERENCE if service else JobKind.BATCH,
                runtime_s=0.0 if service else (3600.0 if mode == "cancel" else 20.0),
                inference=InferenceSpec(replicas=1) if service else None,
                allowed_sites=(SJC,),
                max_retries=1 if mode == "retry" else 0,
                entrypoint=command,
                env={"PARITY_MODE": mode},
            )
        )
    return out


class Tap:
    """Passes every call through to an executor and keeps the events it reports."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.seen: list[ExecEvent] = []

    def launch(self, request: LaunchRequest) -> None:
        self.inner.launch(request)

    def cancel(self, job_id: str) -> None:
        self.inner.cancel(job_id)

    def poll(self) -> Sequence[ExecEvent]:
        events = self.inner.poll()
        self.seen.extend(events)
        return events

    def active(self) -> dict[str, int]:
        return self.inner.active()

    def unavailable_sites(self) -> frozenset[str]:
        return self.inner.unavailable_sites()

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class Outcome:
    """What a run of the script did to one job, without times, ids or site-specific text."""

    executor_events: tuple[tuple[str, int, int | None, str], ...]  # kind, attempt, exit code, health
    store_events: tuple[str, ...]
    state: JobState
    exit_code: int | None
    attempts: tuple[tuple[int, JobState, int | None], ...]


def run_script(catalog: Catalog, executor: Executor, clock: Clock, advance: Callable[[], None]) -> dict[str, Outcome]:
    tap = Tap(executor)
    svc = SchedulerService(catalog, MemoryStore(catalog), tap, make_placer("greedy"), clock, CycleSettings(tick_s=0.05))
    ids = {s.name: job.id for s, (job, _) in zip(script(), svc.submit(script()), strict=True)}
    cancelled: set[str] = set()
    deadline = time.monotonic() + 240.0
    while time.monotonic() < deadline:
        svc.run_cycle()
        jobs = {name: svc.get(job_id) for name, job_id in ids.items()}
        if jobs["cancel"].state is JobState.RUNNING and "cancel" not in cancelled:
            svc.cancel(ids["cancel"], by="parity")
            cancelled.add("cancel")
        if jobs["service"].health == "healthy" and "service" not in cancelled:
            svc.cancel(ids["service"], by="parity")
            cancelled.add("service")
        if all(j.state.terminal for j in jobs.values()):
            # the executors' STOPPED news arrives after the cancel: collect it too
            wanted = {ids["cancel"], ids["service"]}
            if wanted <= {e.job_id for e in tap.seen if e.kind is ExecEventKind.STOPPED}:
                break
        advance()
    else:
        raise AssertionError(f"the script did not finish: {[svc.get(i) for i in ids.values()]}")
    out = {}
    for name, job_id in ids.items():
        job = svc.get(job_id)
        events: list[tuple[str, int, int | None, str]] = []
        for e in tap.seen:
            if e.job_id != job_id:
                continue
            row = (str(e.kind), e.attempt, e.exit_code, e.health)
            if events and e.kind is ExecEventKind.HEALTH and events[-1][0] == "health":
                events[-1] = row  # a service's health as it settled (Ray may say "starting" first)
            else:
                events.append(row)
        store = [str(e.kind) for e in svc.events(0, job_id) if e.kind is not EventKind.HEALTH]
        out[name] = Outcome(
            tuple(events),
            tuple(store),
            job.state,
            job.exit_code,
            tuple((a.number, a.state, a.exit_code) for a in job.attempts),
        )
    return out


def test_both_executors_implement_the_same_small_protocol() -> None:
    members = [m for m in vars(Executor) if not m.startswith("_")]
    assert sorted(members) == ["active", "cancel", "close", "launch", "poll", "unavailable_sites"]
    for cls in (SimExecutor, RayExecutor):
        for m in members:
            ours, theirs = inspect.signature(getattr(cls, m)), inspect.signature(getattr(Executor, m))
            assert list(ours.parameters) == list(theirs.parameters), (cls.__name__, m)


@pytest.mark.ray
@pytest.mark.slow
def test_same_script_same_events_on_the_sim_and_on_ray(
    ray_catalog: Catalog, ray_executor: Callable[..., RayExecutor]
) -> None:
    clock = ManualClock(time.time())

    def exit_code(request: LaunchRequest) -> int:
        return MODES[request.spec.env["PARITY_MODE"]][1](request.attempt)

    sim = run_script(
        ray_catalog, SimExecutor(clock, ray_catalog, exit_code=exit_code), clock, lambda: clock.advance(5.0)
    )
    ray = run_script(ray_catalog, ray_executor(), WallClock(), lambda: time.sleep(0.2))

    assert sim == ray
    # ... and the script did what it says, so the comparison is not vacuous.
    assert sim["succeed"].state is JobState.SUCCEEDED and sim["succeed"].exit_code == 0
    assert sim["fail"].state is JobState.FAILED and sim["fail"].exit_code == 3
    assert sim["retry"].attempts == ((1, JobState.FAILED, 4), (2, JobState.SUCCEEDED, 0))
    assert sim["retry"].store_events == ("submitted", "placed", "running", "retrying", "placed", "running", "succeeded")
    assert sim["cancel"].executor_events == (("started", 1, None, ""), ("stopped", 1, None, ""))
    assert sim["service"].executor_events == (
        ("started", 1, None, ""),
        ("health", 1, None, "healthy"),
        ("stopped", 1, None, ""),
    )
    assert sim["service"].state is JobState.CANCELLED
