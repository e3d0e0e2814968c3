"""The Ray launch plan (ranks, bundles, strategy), the launcher's line protocol, and service health
in the store: pure functions, no Ray started."""

from __future__ import annotations

import json
import time

import pytest

from placers.catalog import Catalog
from placers.domain import (
    Attempt,
    CostBreakdown,
    InferenceSpec,
    Job,
    JobKind,
    JobSpec,
    JobState,
    NodeBinding,
    Placement,
)
from scheduler.clock import ManualClock
from scheduler.executors.base import ExecEventKind, LaunchRequest
from scheduler.executors.gravity_gang.protocol import (
    PLAN_ENV,
    CauseKind,
    GangPlan,
    Health,
    HealthState,
    LineKind,
    RankSpec,
    line,
    split_output,
)
from scheduler.executors.ray_jobs import (
    GIB,
    LAUNCHER_DIR,
    ClusterTarget,
    backoff_s,
    embedded_resources,
    gang_plan,
    rank_gpus,
    submission_args,
)
from scheduler.executors.sim import SimExecutor
from scheduler.settings import ExecutorSettings
from scheduler.store.base import EventKind, JobUpdate
from scheduler.store.transitions import apply_update

SETTINGS = ExecutorSettings(gang_ready_timeout_s=42.0, restart_backoff_s=2.0, restart_backoff_max_s=8.0)


def request(
    *,
    gpus: int = 1,
    gpu_milli: int = 1000,
    single_node: bool = False,
    site: str = "onprem-sjc",
    pool: str = "h100",
    bindings: tuple[NodeBinding, ...] = (),
    inference: InferenceSpec | None = None,
    cpus: float = 0.0,
    memory_gb: float = 0.0,
) -> LaunchRequest:
    spec = JobSpec(
        name="plan",
        kind=JobKind.INFERENCE if inference else JobKind.TRAINING,
        gpus=gpus,
        gpu_milli=gpu_milli,
        entrypoint="python train.py",
        single_node=single_node,
        inference=inference,
        cpus=cpus,
        memory_gb=memory_gb,
        env={"A": "1"},
    )
    placement = Placement(site, pool, "H100-80GB", False, 0.0, None, CostBreakdown(), 0.0, bindings)
    return LaunchRequest("j-1", 3, spec, placement, epoch=9)


def test_ranks_follow_the_placement(catalog: Catalog) -> None:
    h100 = catalog.pool("onprem-sjc/h100")  # 8 GPUs per node
    p5 = catalog.pool("aws-us-east-1/p5")  # elastic, 8 per instance

    def shape(req: LaunchRequest, pool: object) -> list[list[int]]:
        return rank_gpus(req.spec, req.placement, pool)  # type: ignore[arg-type]

    assert shape(request(gpus=4, single_node=True), h100) == [[4]]
    assert shape(request(gpus=4), h100) == [[4]]  # fits a node: one rank
    assert shape(request(gpus=20, site="aws-us-east-1", pool="p5"), p5) == [[8, 8, 4]]
    # On-prem bindings decide: 3 GPUs on one node and 1 on another are two ranks.
    split = (NodeBinding(2, (0, 1, 2)), NodeBinding(5, (7,)))
    assert shape(request(gpus=4, bindings=split), h100) == [[3, 1]]
    # Replicas: bindings are cut per replica of `gpus` GPUs each.
    two = InferenceSpec(replicas=2, spread=True)
    per_replica = (NodeBinding(0, (0, 1)), NodeBinding(1, (0, 1)))
    assert shape(request(gpus=2, inference=two, bindings=per_replica), h100) == [[2], [2]]
    # A share of one GPU is one rank of one GPU.
    assert shape(request(gpu_milli=250), h100) == [[1]]


def test_strategy_bundles_and_resources(catalog: Catalog) -> None:
    one = gang_plan(request(gpus=4, single_node=True), catalog, SETTINGS)
    assert one.strategy == "STRICT_PACK" and one.ready_timeout_s == 42.0 and not one.service
    assert one.bundles() == [{"GPU": 4.0, "site:onprem-sjc": 4.0}]  # pool key unknown: not asked
    assert one.submission_id == "j-1-a3" and one.command == "python train.py"

    advertised = {"site:onprem-sjc": 8.0, "pool:onprem-sjc/h100": 8.0}
    across = gang_plan(
        request(gpus=4, bindings=(NodeBinding(0, (0, 1, 2)), NodeBinding(1, (0,))), cpus=8, memory_gb=64),
        catalog,
        SETTINGS,
        advertised=advertised,
    )
    assert across.strategy == "PACK"
    assert across.bundles() == [
        {"GPU": 3.0, "CPU": 6.0, "memory": float(48 * GIB), "site:onprem-sjc": 3.0, "pool:onprem-sjc/h100": 3.0},
        {"GPU": 1.0, "CPU": 2.0, "memory": float(16 * GIB), "site:onprem-sjc": 1.0, "pool:onprem-sjc/h100": 1.0},
    ]
    logical = gang_plan(request(gpus=2, cpus=8, memory_gb=64), catalog, SETTINGS, cpu_memory=False)
    assert logical.bundles() == [{"GPU": 2.0, "site:onprem-sjc": 2.0}]  # a stand-in cluster: GPUs only

    shared = gang_plan(request(gpu_milli=250), catalog, SETTINGS)
    assert shared.bundles() == [{"GPU": 0.25, "site:onprem-sjc": 0.25}]


def test_services_spread_on_dedicated_pools(catalog: Catalog) -> None:
    spread = InferenceSpec(replicas=3, dedicated=True, spread=True)
    plan = gang_plan(request(inference=spread, site="onprem-fra", pool="l40s-inference"), catalog, SETTINGS)
    assert plan.service and plan.strategy == "STRICT_SPREAD" and len(plan.groups) == 3
    # Dedicated capacity: only the pool's own resource, never the site's shared one.
    assert plan.bundles() == [{"GPU": 1.0, "pool:onprem-fra/l40s-inference": 1.0}] * 3
    assert (plan.restart_backoff_s, plan.restart_backoff_max_s) == (2.0, 8.0)
    packed = gang_plan(request(inference=InferenceSpec(replicas=2)), catalog, SETTINGS)
    assert packed.strategy == "PACK"
    wide = InferenceSpec(replicas=2, spread=True)  # each replica spans two nodes: best effort
    assert gang_plan(request(gpus=12, inference=wide), catalog, SETTINGS).strategy == "SPREAD"


def test_submission_runs_the_launcher_with_the_plan(catalog: Catalog) -> None:
    req = request(gpus=2, single_node=True)
    plan = gang_plan(req, catalog, SETTINGS)
    args = submission_args(req, plan, ClusterTarget("http://ray:8265", python="/opt/py 3/bin/python"))
    assert args["entrypoint"] == "'/opt/py 3/bin/python' -m gravity_gang"
    assert args["submission_id"] == "j-1-a3" and args["entrypoint_num_cpus"] == 0
    env = args["runtime_env"]["env_vars"]
    assert GangPlan.from_json(env[PLAN_ENV]) == plan
    assert env["A"] == "1" and env["GRAVITY_ATTEMPT"] == "3" and env["GRAVITY_SITE"] == "onprem-sjc"
    assert args["runtime_env"]["py_modules"] == [str(LAUNCHER_DIR)]
    assert (LAUNCHER_DIR / "__main__.py").exists() and (LAUNCHER_DIR / "protocol.py").exists()
    assert args["metadata"] == {
        "gravity_job_id": "j-1",
        "gravity_attempt": "3",
        "gravity_epoch": "9",
        "gravity_site": "onprem-sjc",
        "gravity_service": "0",
    }


def test_embedded_cluster_keeps_dedicated_gpus_out_of_the_site_resource(catalog: Catalog) -> None:
    res = embedded_resources(catalog, ["onprem-fra", "aws-us-east-1"])
    assert res["site:onprem-fra"] == 64.0  # a100 only: the 24 dedicated L40S are not batch capacity
    assert res["pool:onprem-fra/l40s-inference"] == 24.0 and res["pool:onprem-fra/a100"] == 64.0
    assert res["site:aws-us-east-1"] == float(catalog.total_gpus("aws-us-east-1"))


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 0.5, 4.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


# ---------------------------------------------------------------------- the line protocol


def test_plan_round_trips_and_bad_plans_are_refused() -> None:
    plan = GangPlan(
        "s-a1", "echo hi", ((RankSpec(2.0, 1.5, 1024, {"site:x": 2.0}),), (RankSpec(0.5),)), "PACK", 9.0, service=True
    )
    assert GangPlan.from_json(plan.to_json()) == plan
    empty = json.loads(plan.to_json())
    empty["groups"] = []
    with pytest.raises(ValueError, match=PLAN_ENV):
        GangPlan.from_json(json.dumps(empty))


def test_launcher_output_is_split_from_the_users() -> None:
    health = Health(HealthState.DEGRADED, 1, 2, ("10.0.0.1:4000",), restarts=3)
    text = [
        "user line",
        line(LineKind.PLACED, {"ranks": []}),
        "GRAVITY-NOT-OURS {}",  # unknown kind: the user's
        "GRAVITY-HEALTH not json",  # malformed: the user's
        line(LineKind.HEALTH, Health(HealthState.STARTING, 0, 2).payload()),
        line(LineKind.HEALTH, health.payload()),
        "last user line",
        line(LineKind.CAUSE, {"kind": "worker_died", "text": "worker died: replica 0 rank 1"}),
    ]
    out = split_output(text)
    assert out.user_lines == ("user line", "GRAVITY-NOT-OURS {}", "GRAVITY-HEALTH not json", "last user line")
    assert out.health() == health
    assert out.cause() == (CauseKind.WORKER_DIED, "worker died: replica 0 rank 1")
    assert split_output(["plain"]).cause() is None and split_output(["plain"]).health() is None
    odd = split_output([line(LineKind.CAUSE, {"kind": "mystery", "text": "x"})])
    assert odd.cause() == (CauseKind.LAUNCHER, "x")


# ---------------------------------------------------------------------- service health in the store


def running_service() -> Job:
    spec = JobSpec("svc", JobKind.INFERENCE, 1, "serve", inference=InferenceSpec(replicas=2))
    placement = Placement("onprem-fra", "l40s-inference", "L40S", False, 0.0, None, CostBreakdown(), 0.0)
    return Job(
        "j-s",
        spec,
        JobState.RUNNING,
        0.0,
        0.0,
        placement=placement,
        attempts=(Attempt(1, "onprem-fra", 0.0, state=JobState.RUNNING),),
    )


def test_health_updates_a_running_service_and_ends_with_it() -> None:
    job = running_service()
    news = JobUpdate("j-s", JobState.RUNNING, 5.0, attempt=1, health="healthy", endpoint="a:1,b:2", replicas_ready=2)
    changed = apply_update(job, news)
    assert changed is not None
    after, kind = changed
    assert kind is EventKind.HEALTH and after.state is JobState.RUNNING
    assert (after.health, after.endpoint, after.replicas_ready, after.updated_at) == ("healthy", "a:1,b:2", 2, 5.0)
    assert apply_update(after, news) is None  # nothing new: no event
    assert apply_update(after, JobUpdate("j-s", JobState.RUNNING, 6.0, attempt=0, health="degraded")) is None  # stale
    cancelled = apply_update(after, JobUpdate("j-s", JobState.CANCELLED, 7.0, cancelled_by="me"))
    assert cancelled is not None
    assert (cancelled[0].health, cancelled[0].endpoint, cancelled[0].replicas_ready) == ("", "", 0)


def test_sim_executor_reports_services_healthy(catalog: Catalog) -> None:
    clock = ManualClock(time.time())
    sim = SimExecutor(clock, catalog)
    req = request(inference=InferenceSpec(replicas=3), site="onprem-fra", pool="l40s-inference")
    sim.launch(req)
    evs = sim.poll()
    assert [e.kind for e in evs] == [ExecEventKind.STARTED, ExecEventKind.HEALTH]
    assert (evs[1].health, evs[1].replicas_ready) == ("healthy", 3)
