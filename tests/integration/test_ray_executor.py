"""RayExecutor against real local Ray clusters (the session's `site_clusters`); no mocks.

Two sites, two separate Ray clusters: onprem-sjc (one node) and onprem-fra (a head and a second
node with fewer GPUs). Each test uses its own job ids, so tests sharing the clusters do not see
each other's work (a fresh executor adopts earlier submissions, whose events the helpers skip).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from placers.catalog import Catalog, load_catalog
from placers.domain import InferenceSpec, JobKind, NodeBinding
from scheduler.executors.base import ExecEventKind, LaunchError
from scheduler.executors.ray_jobs import ClusterTarget, RayExecutor, resolve_addresses
from scheduler.executors.ray_local import free_port
from scheduler.settings import ExecutorSettings
from tests.integration.conftest import FRA, SJC, SiteClusters
from tests.integration.netfault import Always503, TcpProxy
from tests.integration.raytools import (
    driver_log,
    events_until,
    kinds,
    make_request,
    placed_ranks,
    ray_job,
    ray_jobs,
    until_started,
    until_terminal,
    wait_for,
)

Factory = Callable[..., RayExecutor]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pid(path: Path, timeout_s: float = 120.0) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip() != "", f"{path}", timeout_s)
    return int(path.read_text().strip())


# ====================================================================== basics, on real Ray


@pytest.mark.ray
def test_launch_runs_to_success_with_log_tail(ray_executor: Factory) -> None:
    ex = ray_executor(log_tail_lines=3)
    req = make_request("sh -c 'for i in 1 2 3 4 5 6 7; do echo line-$i; done'")
    ex.launch(req)
    evs = until_terminal(ex, req.job_id)
    assert kinds(evs) == [ExecEventKind.STARTED, ExecEventKind.SUCCEEDED]
    assert all(e.attempt == 0 for e in evs)
    end = evs[-1]
    assert end.exit_code == 0 and end.cause == ""
    assert end.log_tail.splitlines() == ["line-5", "line-6", "line-7"]  # launcher lines are not in the tail
    assert evs[0].at <= end.at
    assert req.job_id not in ex.active()


@pytest.mark.ray
def test_failing_entrypoint_reports_exit_code_cause_and_tail(ray_executor: Factory) -> None:
    ex = ray_executor()
    req = make_request("sh -c 'echo boom; exit 3'")
    ex.launch(req)
    evs = until_terminal(ex, req.job_id)
    assert kinds(evs) == [ExecEventKind.STARTED, ExecEventKind.FAILED]
    end = evs[-1]
    assert end.exit_code == 3 and not end.infrastructure
    assert "boom" in end.log_tail
    assert "exit code 3" in end.cause  # Ray's message: "Job entrypoint command failed with exit code 3, ..."


@pytest.mark.ray
def test_cancel_stops_a_running_job_and_active_lists_it(ray_executor: Factory, tmp_path: Path) -> None:
    ex = ray_executor()
    pid_file = tmp_path / "pid"
    req = make_request(f"echo $$ > {pid_file}; exec sleep 300", attempt=2)
    ex.launch(req)
    assert kinds(until_started(ex, req.job_id)) == [ExecEventKind.STARTED]
    pid = read_pid(pid_file)
    assert alive(pid)
    assert ex.active()[req.job_id] == 2
    ex.cancel(req.job_id)
    evs = until_terminal(ex, req.job_id)
    assert kinds(evs) == [ExecEventKind.STOPPED]
    assert evs[0].attempt == 2 and evs[0].cause == "cancelled"
    assert req.job_id not in ex.active()
    wait_for(lambda: not alive(pid), "the cancelled command's process to end", 30)


@pytest.mark.ray
def test_same_launch_twice_makes_one_ray_job(ray_executor: Factory, site_clusters: SiteClusters) -> None:
    first, second = ray_executor(), ray_executor()
    req = make_request("sh -c 'echo once'")
    first.launch(req)
    first.launch(req)  # same launch id: nothing happens
    second.launch(req)  # another executor (a restarted scheduler): Ray answers "already exists"
    assert kinds(until_terminal(first, req.job_id)) == [ExecEventKind.STARTED, ExecEventKind.SUCCEEDED]
    assert kinds(until_terminal(second, req.job_id))[-1] is ExecEventKind.SUCCEEDED  # not "Ray refused"
    mine = [j for j in ray_jobs(site_clusters.sjc) if j.get("submission_id") == req.launch_id]
    assert len(mine) == 1
    assert mine[0]["metadata"] == {
        "gravity_job_id": req.job_id,
        "gravity_attempt": "0",
        "gravity_epoch": "7",
        "gravity_site": SJC,
        "gravity_service": "0",
    }
    first.launch(req)  # after the end too
    time.sleep(0.5)
    assert [e for e in first.poll() if e.job_id == req.job_id] == []
    assert len([j for j in ray_jobs(site_clusters.sjc) if j.get("submission_id") == req.launch_id]) == 1


@pytest.mark.ray
@pytest.mark.parametrize(("gpus", "gpu_milli", "visible"), [(3, 1000, 3), (1, 500, 1)])
def test_job_sees_exactly_its_logical_gpus(ray_executor: Factory, gpus: int, gpu_milli: int, visible: int) -> None:
    ex = ray_executor()
    req = make_request("sh -c 'echo CVD=$CUDA_VISIBLE_DEVICES'", gpus=gpus, gpu_milli=gpu_milli, single_node=True)
    ex.launch(req)
    end = until_terminal(ex, req.job_id)[-1]
    assert end.kind is ExecEventKind.SUCCEEDED, end
    line = next(x for x in end.log_tail.splitlines() if x.startswith("CVD="))
    ids = [x for x in line.removeprefix("CVD=").split(",") if x]
    assert len(ids) == visible and len(set(ids)) == visible, line


@pytest.mark.ray
def test_env_vars_arrive(ray_executor: Factory) -> None:
    ex = ray_executor()
    req = make_request(
        "sh -c 'env | grep -E \"^(GRAVITY_|MY_SETTING=)\" | sort'",
        env={"MY_SETTING": "forty two"},
        site=FRA,
        pool="a100",
        gpu_model="A100-80GB",
        attempt=1,
    )
    ex.launch(req)
    end = until_terminal(ex, req.job_id)[-1]
    assert end.kind is ExecEventKind.SUCCEEDED, end
    got = dict(x.split("=", 1) for x in end.log_tail.splitlines() if x.startswith(("GRAVITY_", "MY_SETTING=")))
    expected = {
        "GRAVITY_ATTEMPT": "1",
        "GRAVITY_GPU_MODEL": "A100-80GB",
        "GRAVITY_JOB_ID": req.job_id,
        "GRAVITY_POOL": "a100",
        "GRAVITY_SITE": FRA,
        "GRAVITY_REPLICA": "0",
        "GRAVITY_RANK": "0",
        "GRAVITY_WORLD_SIZE": "1",
        "MY_SETTING": "forty two",
    }
    assert {k: got.get(k) for k in expected} == expected
    assert int(got["GRAVITY_PORT"]) > 0 and got["GRAVITY_MASTER_ADDR"]


@pytest.mark.ray
def test_restarted_executor_adopts_running_jobs(ray_executor: Factory) -> None:
    before = ray_executor()
    req = make_request("sleep 300", attempt=1)
    before.launch(req)
    until_started(before, req.job_id)
    before.close()  # Gravity goes away; the job keeps running on Ray

    after = ray_executor()
    assert after.active().get(req.job_id) == 1  # from Ray's job list: metadata, not memory
    after.cancel(req.job_id)  # how a restarted scheduler stops work it no longer wants (an orphan)
    evs = until_terminal(after, req.job_id)
    assert evs[-1].kind is ExecEventKind.STOPPED and evs[-1].attempt == 1


# ====================================================================== two sites, two clusters


@pytest.mark.ray
def test_each_site_runs_on_its_own_cluster(ray_executor: Factory, site_clusters: SiteClusters, tmp_path: Path) -> None:
    ex = ray_executor()
    at_sjc = make_request("sh -c 'echo hello from $GRAVITY_SITE'")
    at_fra = make_request("sh -c 'echo hello from $GRAVITY_SITE; exit 5'", site=FRA, pool="a100")
    pid_file = tmp_path / "fra.pid"
    long_fra = make_request(f"echo $$ > {pid_file}; exec sleep 300", site=FRA, pool="a100")
    for req in (at_sjc, at_fra, long_fra):
        ex.launch(req)
    assert ex.unavailable_sites() == frozenset(s for s in load_catalog().site_index if s not in (SJC, FRA))

    sjc_end = until_terminal(ex, at_sjc.job_id)[-1]
    fra_end = until_terminal(ex, at_fra.job_id)[-1]
    assert (sjc_end.kind, sjc_end.exit_code, sjc_end.log_tail) == (ExecEventKind.SUCCEEDED, 0, f"hello from {SJC}")
    assert (fra_end.kind, fra_end.exit_code, fra_end.log_tail) == (ExecEventKind.FAILED, 5, f"hello from {FRA}")
    # Each attempt went to its own site's cluster, and only there.
    sjc_ids = {j["submission_id"] for j in ray_jobs(site_clusters.sjc)}
    fra_ids = {j["submission_id"] for j in ray_jobs(site_clusters.fra)}
    assert at_sjc.launch_id in sjc_ids and at_sjc.launch_id not in fra_ids
    assert {at_fra.launch_id, long_fra.launch_id} <= fra_ids and not {at_fra.launch_id, long_fra.launch_id} & sjc_ids

    until_started(ex, long_fra.job_id)
    pid = read_pid(pid_file)
    ex.cancel(long_fra.job_id)
    assert kinds(until_terminal(ex, long_fra.job_id)) == [ExecEventKind.STOPPED]
    wait_for(lambda: (ray_job(site_clusters.fra, long_fra.launch_id) or {}).get("status") == "STOPPED", "STOPPED")
    wait_for(lambda: not alive(pid), "the cancelled command's process to end", 30)


# ====================================================================== gangs


@pytest.mark.ray
def test_gang_spans_nodes_with_exactly_its_gpus(ray_executor: Factory, site_clusters: SiteClusters) -> None:
    ex = ray_executor()
    # Placed 3 GPUs on one node and 1 on another: two ranks, PACK, one per node chunk.
    req = make_request(
        "sh -c 'echo rank=$GRAVITY_RANK/$GRAVITY_WORLD_SIZE CVD=$CUDA_VISIBLE_DEVICES'",
        gpus=4,
        site=FRA,
        pool="a100",
        bindings=[NodeBinding(0, (0, 1, 2)), NodeBinding(5, (7,))],
    )
    ex.launch(req)
    end = until_terminal(ex, req.job_id)[-1]
    assert end.kind is ExecEventKind.SUCCEEDED, end
    ranks = placed_ranks(site_clusters.fra, req.launch_id)
    assert [len(r["gpu_ids"]) for r in ranks] == [3, 1]
    assert len({r["node_id"] for r in ranks}) == 2  # the head holds 3 of site:onprem-fra, the node 1
    lines = sorted(end.log_tail.splitlines())
    assert [x.split(" CVD=")[0] for x in lines] == ["[rank 0] rank=0/2", "[rank 1] rank=1/2"]
    assert [len(x.split(" CVD=")[1].split(",")) for x in lines] == [3, 1]


@pytest.mark.ray
@pytest.mark.slow
def test_gang_is_all_or_nothing_when_a_node_is_short(ray_executor: Factory, site_clusters: SiteClusters) -> None:
    ex = ray_executor(gang_ready_timeout_s=40.0)
    # 3 + 3 GPUs of site:onprem-fra: the head has 3, the second node only 1. Never half a gang.
    gang = make_request(
        "echo should never run",
        gpus=6,
        site=FRA,
        pool="a100",
        bindings=[NodeBinding(0, (0, 1, 2)), NodeBinding(1, (0, 1, 2))],
    )
    ex.launch(gang)
    until_started(ex, gang.job_id)
    # While the gang waits, the head's 3 GPUs are free: a job that needs all of them runs now.
    probe = make_request(
        "sh -c 'echo probe CVD=$CUDA_VISIBLE_DEVICES'", gpus=3, single_node=True, site=FRA, pool="a100"
    )
    ex.launch(probe)
    probe_end = until_terminal(ex, probe.job_id)[-1]
    assert probe_end.kind is ExecEventKind.SUCCEEDED, probe_end
    assert len(probe_end.log_tail.removeprefix("probe CVD=").split(",")) == 3
    end = until_terminal(ex, gang.job_id)[-1]
    assert end.kind is ExecEventKind.FAILED and end.exit_code is None and not end.infrastructure
    assert "could not be placed within 40 s; nothing was held" in end.cause, end.cause
    assert "PACK" in end.cause
    assert "should never run" not in driver_log(site_clusters.fra, gang.launch_id)


@pytest.mark.ray
@pytest.mark.parametrize(
    ("gpus", "cpus", "what"),
    [(4, 0.0, "{GPU: 4, pool:onprem-fra/a100: 4, site:onprem-fra: 4}"), (1, 64.0, "CPU: 64")],
)
def test_gang_no_node_can_hold_fails_cleanly(ray_executor: Factory, gpus: int, cpus: float, what: str) -> None:
    ex = ray_executor(gang_ready_timeout_s=3.0)
    # 4 GPUs on one node (no fra node has 4 of site:onprem-fra), or 64 CPUs (fra accounts CPUs).
    req = make_request("echo never", gpus=gpus, cpus=cpus, single_node=True, site=FRA, pool="a100")
    ex.launch(req)
    end = until_terminal(ex, req.job_id)[-1]
    assert end.kind is ExecEventKind.FAILED and end.exit_code is None
    assert "STRICT_PACK) could not be placed within 3 s" in end.cause and what in end.cause, end.cause
    assert "never" not in end.log_tail


@pytest.mark.ray
def test_dead_worker_fails_the_attempt_with_its_cause(
    ray_executor: Factory, site_clusters: SiteClusters, tmp_path: Path
) -> None:
    ex = ray_executor()
    pid_file = tmp_path / "pid"
    req = make_request(f"echo $$ > {pid_file}; exec sleep 300", gpus=2, single_node=True)
    ex.launch(req)
    (rank,) = placed_ranks(site_clusters.sjc, req.launch_id)
    command = read_pid(pid_file)
    os.kill(rank["worker_pid"], signal.SIGKILL)  # the Ray worker process holding the rank dies
    evs = until_terminal(ex, req.job_id)
    end = evs[-1]
    assert kinds(evs) == [ExecEventKind.STARTED, ExecEventKind.FAILED]
    assert end.exit_code is None and not end.infrastructure  # counts against the job's retries
    assert end.cause.startswith(
        f"worker died: replica 0 rank 0 on node {rank['node_ip']} (worker pid {rank['worker_pid']})"
    )
    wait_for(lambda: not alive(command), "the dead worker's command to be killed too", 30)


@pytest.mark.ray
@pytest.mark.slow
def test_dead_node_fails_the_attempt_with_its_cause(ray_executor: Factory, site_clusters: SiteClusters) -> None:
    # A third fra node, the only one with 4 GPUs of site:onprem-fra: the job must land there.
    extra = site_clusters.fra.add_node(gpus=4, resources={"site:onprem-fra": 4.0, "pool:onprem-fra/a100": 4.0})
    try:
        ex = ray_executor()
        req = make_request("exec sleep 300", gpus=4, single_node=True, site=FRA, pool="a100")
        ex.launch(req)
        (rank,) = placed_ranks(site_clusters.fra, req.launch_id)
        assert rank["node_id"] == extra.node_id
        extra.kill()  # the machine goes away mid-job
        end = until_terminal(ex, req.job_id)[-1]
        assert end.kind is ExecEventKind.FAILED and end.exit_code is None and not end.infrastructure, end
        assert end.cause.startswith("worker died: replica 0 rank 0"), end.cause
    finally:
        extra.close()


# ====================================================================== services


@pytest.mark.ray
@pytest.mark.slow
def test_service_replicas_spread_restart_in_place_and_release_on_cancel(
    ray_executor: Factory, site_clusters: SiteClusters
) -> None:
    ex = ray_executor(gang_ready_timeout_s=5.0)
    service = make_request(
        "echo serving on $GRAVITY_PORT; exec sleep 600",
        kind=JobKind.INFERENCE,
        inference=InferenceSpec(replicas=2, dedicated=True, spread=True),
        site=FRA,
        pool="l40s-inference",
        gpu_model="L40S",
    )
    ex.launch(service)

    evs = events_until(
        ex, service.job_id, lambda evs: any(e.kind is ExecEventKind.HEALTH and e.health == "healthy" for e in evs)
    )
    assert evs[0].kind is ExecEventKind.STARTED
    up = [e for e in evs if e.kind is ExecEventKind.HEALTH][-1]
    assert up.replicas_ready == 2 and len(up.endpoint.split(",")) == 2
    ranks = placed_ranks(site_clusters.fra, service.launch_id)
    assert len({r["node_id"] for r in ranks}) == 2  # STRICT_SPREAD: one replica per node
    assert all(len(r["gpu_ids"]) == 1 for r in ranks)

    # The dedicated pool is held: another service for it cannot be placed while this one lives.
    rival = make_request(
        "echo rival; exec sleep 600",
        kind=JobKind.INFERENCE,
        inference=InferenceSpec(replicas=1, dedicated=True),
        site=FRA,
        pool="l40s-inference",
        gpu_model="L40S",
    )
    ex.launch(rival)

    # Kill one replica's worker: the launcher restarts it in its bundle; health dips and recovers.
    os.kill(ranks[1]["worker_pid"], signal.SIGKILL)
    evs = events_until(
        ex,
        service.job_id,
        lambda evs: (
            any(e.kind is ExecEventKind.HEALTH and e.replicas_ready < 2 for e in evs)
            and evs[-1].kind is ExecEventKind.HEALTH
            and evs[-1].health == "healthy"
        ),
    )
    assert all(e.kind is ExecEventKind.HEALTH for e in evs)  # the attempt never ended
    assert evs[-1].replicas_ready == 2
    log_text = driver_log(site_clusters.fra, service.launch_id)
    assert "worker died: replica 1 rank 0" in log_text and "restarting replica 1 (restart 1)" in log_text

    rival_end = until_terminal(ex, rival.job_id)[-1]
    assert rival_end.kind is ExecEventKind.FAILED and "could not be placed" in rival_end.cause

    ex.cancel(service.job_id)
    assert until_terminal(ex, service.job_id)[-1].kind is ExecEventKind.STOPPED
    # Released: the same shape fits now.
    again = make_request(
        "echo served",
        kind=JobKind.BATCH,
        site=FRA,
        pool="l40s-inference",
        gpu_model="L40S",
    )
    ex.launch(again)
    assert until_terminal(ex, again.job_id)[-1].kind is ExecEventKind.SUCCEEDED


# ====================================================================== never twice


@pytest.mark.ray
def test_superseded_attempt_is_stopped(ray_executor: Factory, site_clusters: SiteClusters) -> None:
    ex = ray_executor()
    old = make_request("exec sleep 300", attempt=1)
    ex.launch(old)
    until_started(ex, old.job_id)
    new = make_request("exec sleep 300", attempt=2, job_id=old.job_id)  # Gravity moved on to attempt 2
    ex.launch(new)
    wait_for(lambda: (ray_job(site_clusters.sjc, old.launch_id) or {}).get("status") == "STOPPED", "old stopped")
    evs = events_until(ex, old.job_id, lambda evs: any(e.kind is ExecEventKind.STOPPED for e in evs))
    (stopped,) = [e for e in evs if e.kind is ExecEventKind.STOPPED]
    assert (stopped.attempt, stopped.cause) == (1, "superseded by attempt 2")
    assert (ray_job(site_clusters.sjc, new.launch_id) or {}).get("status") in {"PENDING", "RUNNING"}
    ex.cancel(new.job_id)
    wait_for(lambda: (ray_job(site_clusters.sjc, new.launch_id) or {}).get("status") == "STOPPED", "new stopped")


# ====================================================================== unreachable and unhealthy clusters


@pytest.mark.ray
def test_submit_that_cannot_connect_fails_at_once_as_infrastructure(
    ray_executor: Factory, site_clusters: SiteClusters
) -> None:
    fra_port = int(site_clusters.fra.address.rsplit(":", 1)[1])
    proxy = TcpProxy(fra_port)
    try:
        target = site_clusters.target(FRA)
        ex = ray_executor(
            targets={FRA: ClusterTarget(proxy.address, target.headers, target.python), SJC: site_clusters.target(SJC)},
            poll_s=2.0,
        )
        ex.active()  # the first look at both clusters went through
        assert FRA not in ex.unavailable_sites()
        proxy.down()
        req = make_request("echo never", site=FRA, pool="a100")
        ex.launch(req)  # the poller has not noticed yet: accepted, then the submit is refused
        (end,) = until_terminal(ex, req.job_id, timeout_s=30)
        assert end.kind is ExecEventKind.FAILED and end.infrastructure, end
        assert end.cause.startswith(f"not launched: site {FRA} unreachable"), end.cause
        assert FRA in ex.unavailable_sites() and SJC not in ex.unavailable_sites()
        with pytest.raises(LaunchError) as err:
            ex.launch(make_request("echo never", site=FRA, pool="a100"))
        assert err.value.retryable and err.value.site == FRA
        assert req.launch_id not in {j["submission_id"] for j in ray_jobs(site_clusters.fra)}
        proxy.up()
        wait_for(lambda: FRA not in ex.unavailable_sites(), "fra available again", 30)
    finally:
        proxy.close()


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
            ex.launch(make_request("true", site=FRA, pool="a100", gpu_model="A100-80GB"))
        assert err.value.retryable and err.value.site == FRA
        assert ex.poll() == []
    finally:
        ex.close()
    only_sjc = RayExecutor(catalog, {SJC: ClusterTarget(dead)})
    try:
        assert "aws-us-east-1" in only_sjc.unavailable_sites()  # no cluster serves it at all
        with pytest.raises(LaunchError) as err:
            only_sjc.launch(make_request("true", site="aws-us-east-1", pool="p5"))
        assert not err.value.retryable
    finally:
        only_sjc.close()


def test_5xx_answers_back_off_and_make_the_site_unavailable() -> None:
    catalog = load_catalog()
    sick = Always503()
    ex = RayExecutor(catalog, {FRA: ClusterTarget(sick.address)}, ExecutorSettings(poll_s=0.05))
    try:
        wait_for(lambda: FRA in ex.unavailable_sites(), "fra unavailable after repeated 503s", 10)
        time.sleep(3.0)
        # Without backoff the poller would have asked ~60 times in 3 s; with it: 0.05, 0.1, ... 3.2 s.
        assert 3 <= sick.requests <= 10, sick.requests
    finally:
        ex.close()
        sick.close()


@pytest.mark.ray
def test_cluster_that_does_not_advertise_a_site_makes_it_unavailable(
    ray_executor: Factory, site_clusters: SiteClusters
) -> None:
    sjc = site_clusters.target(SJC)
    checked = ray_executor(targets={SJC: sjc, "aws-us-east-1": sjc})
    wait_for(lambda: "aws-us-east-1" in checked.unavailable_sites(), "aws-us-east-1 unavailable", 30)
    assert SJC not in checked.unavailable_sites()
    trusting = ray_executor(targets={SJC: sjc, "aws-us-east-1": sjc}, require_site_resources=False)
    trusting.active()
    time.sleep(1.0)
    assert "aws-us-east-1" not in trusting.unavailable_sites()
    # A dedicated pool's resource is required: without it, dedicated capacity cannot be held.
    no_pool = ray_executor(targets={FRA: sjc})
    wait_for(lambda: FRA in no_pool.unavailable_sites(), "the inventory of the sjc cluster", 30)
    with pytest.raises(LaunchError, match="advertises no pool:onprem-fra/l40s-inference") as err:
        no_pool.launch(make_request("true", site=FRA, pool="l40s-inference", gpu_model="L40S", kind=JobKind.INFERENCE))
    assert not err.value.retryable


def test_remote_clusters_get_the_token_and_the_launcher_python() -> None:
    catalog = load_catalog()
    dead = f"http://127.0.0.1:{free_port()}"
    settings = ExecutorSettings(
        ray_address=dead,
        site_addresses={FRA: dead + "/"},
        ray_auth_token="s3cret",
        launcher_python="/opt/ray/bin/python",
    )
    ex = RayExecutor.from_settings(settings, catalog)
    try:
        targets = {site: c.target for site, c in ex._site_cluster.items()}
        assert set(targets) == set(catalog.site_index)
        assert {t.address for t in targets.values()} == {dead, dead + "/"}  # fra has its own cluster
        for t in targets.values():
            assert dict(t.headers) == {"Authorization": "Bearer s3cret"}
            assert t.python == "/opt/ray/bin/python" and t.cpu_memory
        assert "s3cret" not in repr(settings)
    finally:
        ex.close()


def test_addresses_resolve_per_site_then_global_then_embedded() -> None:
    catalog: Catalog = load_catalog()
    embedded = resolve_addresses(ExecutorSettings(), catalog)
    assert set(embedded) == set(catalog.site_index) and set(embedded.values()) == {None}
    mixed = resolve_addresses(
        ExecutorSettings(ray_address="http://ray:8265", site_addresses={FRA: "http://fra:8265"}), catalog
    )
    assert mixed[FRA] == "http://fra:8265" and mixed["aws-us-east-1"] == "http://ray:8265"
    partial = resolve_addresses(ExecutorSettings(site_addresses={FRA: "http://fra:8265"}), catalog)
    assert partial[FRA] == "http://fra:8265" and partial[SJC] is None
    with pytest.raises(ValueError, match="nowhere"):
        resolve_addresses(ExecutorSettings(site_addresses={"nowhere": "http://x:8265"}), catalog)
