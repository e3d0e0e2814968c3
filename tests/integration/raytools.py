"""Helpers for tests against real Ray: launch requests, waiting for events, reading Ray directly."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from placers.domain import CostBreakdown, InferenceSpec, JobKind, JobSpec, NodeBinding, Placement
from scheduler.executors.base import ExecEvent, ExecEventKind, Executor, LaunchRequest
from scheduler.executors.gravity_gang.protocol import LineKind, split_output
from scheduler.executors.ray_local import LocalRayCluster

_unread: dict[int, list[ExecEvent]] = {}  # executor id -> events polled for other jobs

TERMINAL = {ExecEventKind.SUCCEEDED, ExecEventKind.FAILED, ExecEventKind.STOPPED}
WAIT_S = 120.0  # generous: the test machine is small and shared


def make_request(
    entrypoint: str,
    *,
    gpus: int = 1,
    gpu_milli: int = 1000,
    env: Mapping[str, str] | None = None,
    site: str = "onprem-sjc",
    pool: str = "h100",
    gpu_model: str = "H100-80GB",
    attempt: int = 0,
    single_node: bool = False,
    bindings: Sequence[NodeBinding] = (),
    kind: JobKind = JobKind.BATCH,
    inference: InferenceSpec | None = None,
    cpus: float = 0.0,
    memory_gb: float = 0.0,
    job_id: str = "",
) -> LaunchRequest:
    now = time.time()
    spec = JobSpec(
        name="it",
        kind=kind,
        gpus=gpus,
        gpu_milli=gpu_milli,
        entrypoint=entrypoint,
        runtime_s=60.0,
        env=dict(env or {}),
        single_node=single_node,
        inference=inference,
        cpus=cpus,
        memory_gb=memory_gb,
    )
    placement = Placement(
        site=site,
        pool=pool,
        gpu_model=gpu_model,
        spot=False,
        start_at=now,
        finish_at=None if kind is JobKind.INFERENCE else now + 60.0,
        cost=CostBreakdown(compute_usd=gpus * 0.11),
        transfer_s=0.0,
        bindings=tuple(bindings),
    )
    return LaunchRequest(job_id or f"j-it-{uuid.uuid4().hex[:12]}", attempt, spec, placement, epoch=7)


def events_until(
    executor: Executor, job_id: str, done: Callable[[list[ExecEvent]], bool], timeout_s: float = WAIT_S
) -> list[ExecEvent]:
    """This job's events, polled until `done(events)` holds. Other jobs' events stay buffered for
    their own waits (per executor)."""
    got: list[ExecEvent] = []
    deadline = time.monotonic() + timeout_s
    buffer = _unread.setdefault(id(executor), [])
    while time.monotonic() < deadline:
        buffer.extend(executor.poll())
        got += [e for e in buffer if e.job_id == job_id]
        buffer[:] = [e for e in buffer if e.job_id != job_id]
        if done(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"{job_id}: timed out after {timeout_s:.0f} s with events {got}")


def until_terminal(executor: Executor, job_id: str, timeout_s: float = WAIT_S) -> list[ExecEvent]:
    return events_until(executor, job_id, lambda evs: any(e.kind in TERMINAL for e in evs), timeout_s)


def until_started(executor: Executor, job_id: str) -> list[ExecEvent]:
    return events_until(executor, job_id, lambda evs: any(e.kind is ExecEventKind.STARTED for e in evs))


def kinds(events: Sequence[ExecEvent]) -> list[ExecEventKind]:
    return [e.kind for e in events]


def _get(cluster: LocalRayCluster, path: str) -> bytes:
    req = urllib.request.Request(f"{cluster.address}{path}", headers=cluster.headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        body: bytes = r.read()
    return body


def ray_jobs(cluster: LocalRayCluster) -> list[dict[str, Any]]:
    """Ray's own job list, read over its REST API (independent of the executor)."""
    out: list[dict[str, Any]] = json.loads(_get(cluster, "/api/jobs/"))
    return out


def ray_job(cluster: LocalRayCluster, submission_id: str) -> dict[str, Any] | None:
    return next((j for j in ray_jobs(cluster) if j.get("submission_id") == submission_id), None)


def driver_log(cluster: LocalRayCluster, submission_id: str) -> str:
    """The job's whole driver log ("" while Ray does not know the job yet)."""
    try:
        body = json.loads(_get(cluster, f"/api/jobs/{submission_id}/logs"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        raise
    return str(body.get("logs", ""))


def placed_ranks(cluster: LocalRayCluster, submission_id: str, timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
    """The launcher's PLACED record (where each rank runs), waited for in the job's driver log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = split_output(driver_log(cluster, submission_id).splitlines()).last(LineKind.PLACED)
        if found is not None:
            ranks: list[dict[str, Any]] = found["ranks"]
            return ranks
        time.sleep(0.2)
    raise AssertionError(f"{submission_id}: no PLACED line within {timeout_s:.0f} s")


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
