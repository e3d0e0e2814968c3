"""RayExecutor against a real local Ray (the session's shared `ray_cluster`); no mocks.

Each test uses its own job ids, so tests sharing the cluster do not see each other's work
(a fresh executor adopts earlier submissions, whose events the helpers below skip).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from placers.catalog import Catalog, load_catalog
from placers.domain import CostBreakdown, JobKind, JobSpec, Placement
from scheduler.executors.base import ExecEvent, ExecEventKind, LaunchError, LaunchRequest
from scheduler.executors.ray_jobs import (
    ClusterTarget,
    RayExecutor,
    resolve_addresses,
    submission_args,
)
from scheduler.executors.ray_local import LocalRayCluster, free_port
from scheduler.settings import ExecutorSettings

TERMINAL = {ExecEventKind.SUCCEEDED, ExecEventKind.FAILED, ExecEventKind.STOPPED}
WAIT_S = 90.0  # generous: the test machine is small and shared


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
) -> LaunchRequest:
    now = time.time()
    spec = JobSpec(
        name="it",
        kind=JobKind.BATCH,
        gpus=gpus,
        gpu_milli=gpu_milli,
        entrypoint=entrypoint,
        runtime_s=60.0,
        env=dict(env or {}),
    )
    placement = Placement(
        site=site,
        pool=pool,
        gpu_model=gpu_model,
        spot=False,
        start_at=now,
        finish_at=now + 60.0,
        cost=CostBreakdown(compute_usd=gpus * 0.11),
        transfer_s=0.0,
    )
    return LaunchRequest(f"j-it-{uuid.uuid4().hex[:12]}", attempt, spec, placement, epoch=7)


def events_until(
    executor: RayExecutor, job_id: str, done: Callable[[list[ExecEvent]], bool], timeout_s: float = WAIT_S
) -> list[ExecEvent]:
    """This job's events, polled until `done(events)` holds."""
    got: list[ExecEvent] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got += [e for e in executor.poll() if e.job_id == job_id]
        if done(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"{job_id}: timed out after {timeout_s:.0f} s with events {got}")


def until_terminal(executor: RayExecutor, job_id: str) -> list[ExecEvent]:
    return events_until(executor, job_id, lambda evs: any(e.kind in TERMINAL for e in evs))


def until_started(executor: RayExecutor, job_id: str) -> list[ExecEvent]:
    return events_until(executor, job_id, lambda evs: any(e.kind is ExecEventKind.STARTED for e in evs))


def ray_jobs(cluster: LocalRayCluster) -> list[dict[str, Any]]:
    """Ray's own job list, read over its REST API (independent of the executor)."""
    req = urllib.request.Request(f"{cluster.address}/api/jobs/", headers=cluster.headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        out: list[dict[str, Any]] = json.loads(r.read())
    return out


def kinds(events: list[ExecEvent]) -> list[ExecEventKind]:
    return [e.kind for e in events]


# ====================================================================== with a real Ray


@pytest.mark.ray
def test_launch_runs_to_success_with_log_tail(ray_executor: Callable[..., RayExecutor]) -> None:
    ex = ray_executor(log_tail_lines=3)
    req = make_request("sh -c 'for i in 1 2 3 4 5 6 7; do echo line-$i; done'")
    ex.launch(req)
    evs = until_terminal(ex, req.job_id)
    assert kinds(evs) == [ExecEventKind.STARTED, ExecEventKind.SUCCEEDED]
    assert all(e.attempt == 0 for e in evs)
    end = evs[-1]
    assert end.exit_code == 0 and end.cause == ""
    assert end.log_tail.splitlines() == ["line-5", "line-6", "line-7"]
    assert evs[0].at <= end.at
    assert req.job_id not in ex.active()


@pytest.mark.ray
def test_failing_entrypoint_reports_exit_code_cause_and_tail(ray_executor: Callable[..., RayExecutor]) -> None:
    ex = ray_executor()
    req = make_request("sh -c 'echo boom; exit 3'")
    ex.launch(req)
    evs = until_terminal(ex, req.job_id)
    assert kinds(evs) == [ExecEventKind.STARTED, ExecEventKind.FAILED]
    end = evs[-1]
    assert end.exit_code == 3
    assert "boom" in end.log_tail
    assert "exit code 3" in end.cause  # Ray's message: "Job entrypoint command failed with exit code 3, ..."


@pytest.mark.ray
def test_cancel_stops_a_running_job_and_active_lists_it(ray_executor: Callable[..., RayExecutor]) -> None:
    ex = ray_executor()
    req = make_request("sleep 300", attempt=2)
    ex.launch(req)
    assert kinds(until_started(ex, req.job_id)) == [ExecEventKind.STARTED]
    assert ex.active()[req.job_id] == 2
    ex.cancel(req.job_id)
    evs = until_terminal(ex, req.job_id)
    assert kinds(evs) == [ExecEventKind.STOPPED]
    assert evs[0].attempt == 2 and evs[0].cause == "cancelled"
    assert req.job_id not in ex.active()


@pytest.mark.ray
def test_same_launch_twice_makes_one_ray_job(
    ray_executor: Callable[..., RayExecutor], ray_cluster: LocalRayCluster
) -> None:
    first, second = ray_executor(), ray_executor()
    req = make_request("sh -c 'echo once'")
    first.launch(req)
    first.launch(req)  # same launch id: nothing happens
    second.launch(req)  # another executor (a restarted scheduler): Ray answers "already exists"
    assert kinds(until_terminal(first, req.job_id)) == [ExecEventKind.STARTED, ExecEventKind.SUCCEEDED]
    assert kinds(until_terminal(second, req.job_id))[-1] is ExecEventKind.SUCCEEDED  # not "Ray refused"
    mine = [j for j in ray_jobs(ray_cluster) if j.get("submission_id") == req.launch_id]
    assert len(mine) == 1
    assert mine[0]["metadata"] == {
        "gravity_job_id": req.job_id,
        "gravity_attempt": "0",
        "gravity_epoch": "7",
        "gravity_site": "onprem-sjc",
    }
    first.launch(req)  # after the end too
    time.sleep(0.5)
    assert [e for e in first.poll() if e.job_id == req.job_id] == []
    assert len([j for j in ray_jobs(ray_cluster) if j.get("submission_id") == req.launch_id]) == 1


@pytest.mark.ray
@pytest.mark.parametrize(("gpus", "gpu_milli", "visible"), [(3, 1000, 3), (1, 500, 1)])
def test_job_sees_exactly_its_logical_gpus(
    ray_executor: Callable[..., RayExecutor], gpus: int, gpu_milli: int, visible: int
) -> None:
    ex = ray_executor()
    req = make_request("sh -c 'echo CVD=$CUDA_VISIBLE_DEVICES'", gpus=gpus, gpu_milli=gpu_milli)
    ex.launch(req)
    end = until_terminal(ex, req.job_id)[-1]
    assert end.kind is ExecEventKind.SUCCEEDED, end
    line = next(x for x in end.log_tail.splitlines() if x.startswith("CVD="))
    ids = [x for x in line.removeprefix("CVD=").split(",") if x]
    assert len(ids) == visible and len(set(ids)) == visible, line


@pytest.mark.ray
def test_env_vars_arrive(ray_executor: Callable[..., RayExecutor]) -> None:
    ex = ray_executor()
    req = make_request(
        "sh -c 'env | grep -E \"^(GRAVITY_|MY_SETTING=)\" | sort'",
        env={"MY_SETTING": "forty two"},
        site="aws-us-east-1",
        pool="p5",
        gpu_model="H100-80GB",
        attempt=1,
    )
    ex.launch(req)
    end = until_terminal(ex, req.job_id)[-1]
    assert end.kind is ExecEventKind.SUCCEEDED, end
    got = dict(x.split("=", 1) for x in end.log_tail.splitlines() if x.startswith(("GRAVITY_", "MY_SETTING=")))
    assert got == {
        "GRAVITY_ATTEMPT": "1",
        "GRAVITY_GPU_MODEL": "H100-80GB",
        "GRAVITY_JOB_ID": req.job_id,
        "GRAVITY_POOL": "p5",
        "GRAVITY_SITE": "aws-us-east-1",
        "MY_SETTING": "forty two",
    }


@pytest.mark.ray
def test_restarted_executor_adopts_running_jobs(ray_executor: Callable[..., RayExecutor]) -> None:
    before = ray_executor()
    req = make_request("sleep 300", attempt=1)
    before.launch(req)
    until_started(before, req.job_id)
    before.close()  # Gravity goes away; the job keeps running on Ray

    after = ray_executor()
    assert after.active().get(req.job_id) == 1  # from Ray's job list: metadata, not memory
    after.cancel(req.job_id)
    evs = until_terminal(after, req.job_id)
    assert evs[-1].kind is ExecEventKind.STOPPED and evs[-1].attempt == 1


# ====================================================================== without Ray


def test_unreachable_cluster_makes_its_sites_unavailable() -> None:
    catalog = load_catalog()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    ex = RayExecutor.from_settings(ExecutorSettings(ray_address=dead, poll_s=0.05), catalog)
    try:
        assert time.monotonic() - started < 2.0  # an address is given: no embedded Ray is started
        assert ex.active() == {}  # answers once every cluster has been tried
        assert ex.unavailable_sites() == set(catalog.site_index)
        with pytest.raises(LaunchError) as err:
            ex.launch(make_request("true", site="onprem-fra", pool="a100", gpu_model="A100-80GB"))
        assert err.value.retryable and err.value.site == "onprem-fra"
        assert ex.poll() == []
    finally:
        ex.close()
    only_sjc = RayExecutor(catalog, {"onprem-sjc": ClusterTarget(dead)})
    try:
        with pytest.raises(LaunchError) as err:  # no cluster serves the site at all
            only_sjc.launch(make_request("true", site="aws-us-east-1", pool="p5"))
        assert not err.value.retryable
    finally:
        only_sjc.close()


def test_addresses_resolve_per_site_then_global_then_embedded() -> None:
    catalog: Catalog = load_catalog()
    embedded = resolve_addresses(ExecutorSettings(), catalog)
    assert set(embedded) == set(catalog.site_index) and set(embedded.values()) == {None}
    mixed = resolve_addresses(
        ExecutorSettings(ray_address="http://ray:8265", site_addresses={"onprem-fra": "http://fra:8265"}), catalog
    )
    assert mixed["onprem-fra"] == "http://fra:8265" and mixed["aws-us-east-1"] == "http://ray:8265"
    partial = resolve_addresses(ExecutorSettings(site_addresses={"onprem-fra": "http://fra:8265"}), catalog)
    assert partial["onprem-fra"] == "http://fra:8265" and partial["onprem-sjc"] is None
    with pytest.raises(ValueError, match="nowhere"):
        resolve_addresses(ExecutorSettings(site_addresses={"nowhere": "http://x:8265"}), catalog)


def test_submission_asks_for_the_jobs_gpus_at_its_site() -> None:
    whole = submission_args(make_request("python train.py", gpus=4, site="onprem-fra", pool="a100"))
    assert whole["entrypoint"] == "python train.py"
    assert whole["entrypoint_num_gpus"] == 4.0 and whole["entrypoint_num_cpus"] == 0
    assert whole["entrypoint_resources"] == {"site:onprem-fra": 4.0}
    shared = submission_args(make_request("python serve.py", gpus=1, gpu_milli=250))
    assert shared["entrypoint_num_gpus"] == 0.25
    assert shared["entrypoint_resources"] == {"site:onprem-sjc": 0.25}
    assert shared["submission_id"].endswith("-a0")
