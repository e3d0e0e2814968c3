"""Virtual execution: every attempt 'runs' for its runtime on the GPU it got, on the injected clock.

Nothing is started. A job reports STARTED at launch and SUCCEEDED after its data transfer
plus its runtime at the placed GPU's speed (or `actual_runtime_s(request)` when the
simulator knows the real duration from a trace). Services (inference) run until cancelled,
reported healthy with every replica ready from their start (a HEALTH event, as the Ray executor
reports them; no endpoint: nothing listens).
Used by the simulator (virtual clock) and by benchmarks and dry runs (wall clock).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence

from placers.catalog import Catalog
from placers.domain import JobKind
from scheduler.clock import Clock
from scheduler.executors.base import ExecEvent, ExecEventKind, LaunchRequest


class SimExecutor:
    def __init__(
        self,
        clock: Clock,
        catalog: Catalog,
        *,
        speedup: float = 1.0,
        actual_runtime_s: Callable[[LaunchRequest], float] | None = None,
        exit_code: Callable[[LaunchRequest], int] | None = None,
    ) -> None:
        self.clock = clock
        self.catalog = catalog
        self.speedup = speedup
        self.actual_runtime_s = actual_runtime_s
        self.exit_code = exit_code
        self._lock = threading.Lock()
        self._running: dict[str, tuple[int, float]] = {}  # job id -> (attempt, ends at)
        self._launched: set[str] = set()  # launch ids seen (idempotency)
        self._ends: list[tuple[float, int, str, int]] = []  # heap of (ends at, seq, job id, attempt)
        self._seq = itertools.count()
        self._events: list[ExecEvent] = []
        self._requests: dict[str, LaunchRequest] = {}
        self.launches = 0  # distinct launches, for tests and reports
        self._down: frozenset[str] = frozenset()

    def runtime_s(self, request: LaunchRequest) -> float:
        if self.actual_runtime_s is not None:
            run = self.actual_runtime_s(request)
        else:
            speed = self.catalog.gpu_models[request.placement.gpu_model].speed
            run = request.spec.runtime_s / speed
        return (request.placement.transfer_s + run) / self.speedup

    def launch(self, request: LaunchRequest) -> None:
        with self._lock:
            if request.launch_id in self._launched:
                return
            self._launched.add(request.launch_id)
            self.launches += 1
            now = self.clock.now()
            self._events.append(ExecEvent(request.job_id, request.attempt, ExecEventKind.STARTED, now))
            if request.spec.kind is JobKind.INFERENCE:
                ends = float("inf")
                replicas = request.spec.replicas  # every virtual replica is up at once
                self._events.append(
                    ExecEvent(
                        request.job_id,
                        request.attempt,
                        ExecEventKind.HEALTH,
                        now,
                        health="healthy",
                        replicas_ready=replicas,
                    )
                )
            else:
                ends = now + self.runtime_s(request)
                heapq.heappush(self._ends, (ends, next(self._seq), request.job_id, request.attempt))
            self._running[request.job_id] = (request.attempt, ends)
            self._requests[request.job_id] = request

    def cancel(self, job_id: str) -> None:
        with self._lock:
            run = self._running.pop(job_id, None)
            self._requests.pop(job_id, None)
            if run is not None:
                self._events.append(
                    ExecEvent(job_id, run[0], ExecEventKind.STOPPED, self.clock.now(), cause="cancelled")
                )

    def poll(self) -> Sequence[ExecEvent]:
        with self._lock:
            now = self.clock.now()
            while self._ends and self._ends[0][0] <= now:
                ends, _, job_id, attempt = heapq.heappop(self._ends)
                current = self._running.get(job_id)
                if current is None or current[0] != attempt:
                    continue  # cancelled or superseded
                del self._running[job_id]
                request = self._requests.pop(job_id)
                code = self.exit_code(request) if self.exit_code else 0
                kind = ExecEventKind.SUCCEEDED if code == 0 else ExecEventKind.FAILED
                self._events.append(ExecEvent(job_id, attempt, kind, ends, exit_code=code))
            out, self._events = self._events, []
            return out

    def next_event_at(self) -> float | None:
        """When the next attempt ends (the simulator advances its clock to it)."""
        with self._lock:
            while self._ends:
                ends, _, job_id, attempt = self._ends[0]
                current = self._running.get(job_id)
                if current is not None and current[0] == attempt:
                    return ends
                heapq.heappop(self._ends)
            return None

    def active(self) -> dict[str, int]:
        with self._lock:
            return {job_id: run[0] for job_id, run in self._running.items()}

    def unavailable_sites(self) -> frozenset[str]:
        return self._down

    def set_unavailable(self, sites: frozenset[str]) -> None:
        """Simulate sites whose cluster does not answer (an outage, a network partition)."""
        self._down = frozenset(sites)

    def close(self) -> None:
        pass
