"""The scheduling service end to end on real Ray clusters: a site whose cluster is unreachable is
routed around, a job whose Ray worker dies is retried, an inference service is placed on dedicated
capacity within its latency SLO, reports health and endpoints, has a killed replica restarted and
releases its reservation when cancelled. SchedulerService + MemoryStore + RayExecutor; no mocks."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from placers.catalog import Catalog
from placers.domain import InferenceSpec, Job, JobKind, JobState
from placers.registry import make_placer
from scheduler.clock import WallClock
from scheduler.executors.ray_jobs import ClusterTarget, RayExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.base import EventKind
from scheduler.store.memory import MemoryStore
from tests.conftest import spec
from tests.integration.conftest import FRA, SJC, SiteClusters
from tests.integration.netfault import TcpProxy
from tests.integration.raytools import placed_ranks, ray_jobs, wait_for

Factory = Callable[..., RayExecutor]
WAIT_S = 180.0


@contextmanager
def running(catalog: Catalog, executor: RayExecutor) -> Iterator[SchedulerService]:
    svc = SchedulerService(
        catalog,
        MemoryStore(catalog),
        executor,
        make_placer("greedy"),
        WallClock(),
        CycleSettings(tick_s=0.05, retry_waiting_s=0.5),
    )
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def until(svc: SchedulerService, job_id: str, check: Callable[[Job], bool], what: str) -> Job:
    wait_for(lambda: check(svc.get(job_id)), f"{job_id}: {what}", WAIT_S)
    return svc.get(job_id)


def submissions(cluster: object) -> set[str]:
    return {j["submission_id"] for j in ray_jobs(cluster)}  # type: ignore[arg-type]


@pytest.mark.ray
@pytest.mark.slow
def test_unreachable_site_is_routed_around(
    ray_executor: Factory, site_clusters: SiteClusters, ray_catalog: Catalog
) -> None:
    proxy = TcpProxy(int(site_clusters.sjc.address.rsplit(":", 1)[1]))
    sjc = site_clusters.target(SJC)
    ex = ray_executor(
        targets={
            SJC: ClusterTarget(proxy.address, sjc.headers, sjc.python, cpu_memory=False),
            FRA: site_clusters.target(FRA),
        }
    )
    try:
        with running(ray_catalog, ex) as svc:
            proxy.down()  # sjc's Ray stops answering
            wait_for(lambda: SJC in ex.unavailable_sites(), "sjc unavailable", 30)
            # An A100 job costs less at sjc (0.85 $/GPU-h) than at fra (0.95): it would go to sjc.
            ((movable, _), (pinned, _)) = svc.submit(
                [
                    spec(gpu_models=("A100-80GB",), allowed_sites=(SJC, FRA), entrypoint="echo ran at $GRAVITY_SITE"),
                    spec(gpu_models=("A100-80GB",), allowed_sites=(SJC,), entrypoint="echo ran at $GRAVITY_SITE"),
                ]
            )
            done = until(svc, movable.id, lambda j: j.state.terminal, "ends")
            assert done.state is JobState.SUCCEEDED, done.reason
            assert done.placement is not None and done.placement.site == FRA
            assert done.log_tail == f"ran at {FRA}"
            assert f"{movable.id}-a1" in submissions(site_clusters.fra)
            _, why = svc.explain_job(movable.id)
            at_sjc = [c for c in why.candidates if c.site == SJC]
            assert any(c.pool == "a100" and "site unavailable" in c.reasons for c in at_sjc), at_sjc

            waiting = until(svc, pinned.id, lambda j: "site unavailable" in j.reason, "waits for sjc")
            assert waiting.state is JobState.PENDING and not waiting.attempts

            proxy.up()  # sjc is back: the waiting job goes there
            back = until(svc, pinned.id, lambda j: j.state.terminal, "ends")
            assert back.state is JobState.SUCCEEDED and back.placement is not None
            assert back.placement.site == SJC and back.log_tail == f"ran at {SJC}"
            assert f"{pinned.id}-a1" in submissions(site_clusters.sjc)
            assert f"{pinned.id}-a1" not in submissions(site_clusters.fra)
    finally:
        proxy.close()


@pytest.mark.ray
@pytest.mark.slow
def test_job_whose_worker_dies_is_retried(
    ray_executor: Factory, site_clusters: SiteClusters, ray_catalog: Catalog
) -> None:
    with running(ray_catalog, ray_executor()) as svc:
        ((job, _),) = svc.submit(
            [
                spec(
                    gpus=2,
                    single_node=True,
                    allowed_sites=(SJC,),
                    max_retries=1,
                    entrypoint='if [ "$GRAVITY_ATTEMPT" = 1 ]; then exec sleep 300; fi; '
                    "echo attempt $GRAVITY_ATTEMPT ok",
                )
            ]
        )
        until(svc, job.id, lambda j: j.state is JobState.RUNNING, "runs")
        (rank,) = placed_ranks(site_clusters.sjc, f"{job.id}-a1")
        os.kill(rank["worker_pid"], signal.SIGKILL)  # the Ray worker running the job dies mid-run
        done = until(svc, job.id, lambda j: j.state.terminal, "ends")
        assert done.state is JobState.SUCCEEDED and done.exit_code == 0 and done.log_tail == "attempt 2 ok"
        first, second = done.attempts
        assert (first.number, first.state, first.exit_code) == (1, JobState.FAILED, None)
        assert first.cause.startswith("worker died: replica 0 rank 0"), first.cause
        assert (second.number, second.state) == (2, JobState.SUCCEEDED)
        kinds = [e.kind for e in svc.events(0, job.id)]
        assert kinds.count(EventKind.RETRYING) == 1 and kinds[-1] is EventKind.SUCCEEDED


@pytest.mark.ray
@pytest.mark.slow
def test_inference_service_on_dedicated_capacity(
    ray_executor: Factory, site_clusters: SiteClusters, ray_catalog: Catalog
) -> None:
    ex = ray_executor(restart_backoff_s=0.5)
    with running(ray_catalog, ex) as svc:

        def l40s_free() -> float:
            (fra,) = [v for v in svc.sites() if v.site.name == FRA]
            return next(p.free_gpus for p in fra.pools if p.name == "l40s-inference")

        assert l40s_free() == 24.0
        ((service, _), (batch, _)) = svc.submit(
            [
                spec(
                    kind=JobKind.INFERENCE,
                    gpus=1,
                    gpu_models=("L40S",),
                    runtime_s=0.0,
                    inference=InferenceSpec(
                        latency_slo_ms=20.0,
                        user_regions=("eu-west", "eu-central"),
                        replicas=2,
                        dedicated=True,
                        spread=True,
                    ),
                    entrypoint="echo serving on $GRAVITY_PORT; exec sleep 600",
                ),
                # Batch work asking for the same GPUs at the same site: the dedicated pool is not for it.
                spec(gpus=1, gpu_models=("L40S",), allowed_sites=(FRA,), entrypoint="echo never"),
            ]
        )
        rejected = until(svc, batch.id, lambda j: j.state.terminal, "decided")
        assert rejected.state is JobState.REJECTED, rejected.reason
        _, why_not = svc.explain_job(batch.id)
        (dedicated,) = [c for c in why_not.candidates if (c.site, c.pool) == (FRA, "l40s-inference")]
        assert dedicated.reasons == ("dedicated-hardware rule",)

        up = until(svc, service.id, lambda j: j.health == "healthy", "healthy")
        assert up.state is JobState.RUNNING and up.replicas_ready == 2 and len(up.endpoint.split(",")) == 2
        assert up.placement is not None and (up.placement.site, up.placement.pool) == (FRA, "l40s-inference")
        assert up.placement.finish_at is None  # long-running: no completion
        _, why = svc.explain_job(service.id)
        far = [c for c in why.candidates if c.site.startswith(("onprem-sjc", "aws-us"))]
        assert far and all(any(r.startswith("RTT to ") and "> SLO 20 ms" in r for r in c.reasons) for c in far)
        assert all("dedicated-hardware rule" in c.reasons for c in why.candidates if c.pool == "a100" and c.site == FRA)
        assert l40s_free() == 22.0  # the reservation

        ranks = placed_ranks(site_clusters.fra, f"{service.id}-a1")
        assert len({r["node_id"] for r in ranks}) == 2  # replicas spread over the two fra nodes
        seq = svc.store.last_seq()
        os.kill(ranks[1]["worker_pid"], signal.SIGKILL)  # a replica dies
        wait_for(
            lambda: any(e.kind is EventKind.HEALTH and e.job.replicas_ready < 2 for e in svc.events(seq, service.id)),
            "health shows the lost replica",
            WAIT_S,
        )
        assert l40s_free() == 22.0  # still held while the replica restarts
        healed = until(svc, service.id, lambda j: j.health == "healthy" and j.replicas_ready == 2, "healthy again")
        assert healed.state is JobState.RUNNING and len(healed.attempts) == 1  # restarted in place, not retried

        cancelled = svc.cancel(service.id, by="test")
        assert cancelled.state is JobState.CANCELLED and (cancelled.health, cancelled.endpoint) == ("", "")
        assert l40s_free() == 24.0
        wait_for(
            lambda: (
                next(j for j in ray_jobs(site_clusters.fra) if j["submission_id"] == f"{service.id}-a1")["status"]
                == "STOPPED"
            ),
            "the service's Ray job stopped",
            60,
        )
        time.sleep(0.2)
