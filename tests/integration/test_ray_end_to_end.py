"""Submit over gRPC, place, run on a real local Ray, report back: the whole path, no stand-ins."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from placers.registry import make_placer
from scheduler.api.server import Server
from scheduler.clock import WallClock
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.memory import MemoryStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def service(ray_executor, ray_catalog) -> SchedulerService:
    return SchedulerService(
        ray_catalog,
        MemoryStore(ray_catalog),
        ray_executor(poll_s=0.2),
        make_placer("greedy"),
        WallClock(),
        CycleSettings(tick_s=0.05),
    )


@pytest.fixture
def stub(service: SchedulerService) -> Iterator[pb_grpc.SchedulerStub]:
    server = Server(service, "127.0.0.1:0", max_workers=8)
    server.start()
    service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.SchedulerStub(channel)
    finally:
        channel.close()
        server.stop(0)
        service.stop()


PRINT_GPUS = "python3 -c \"import os; e = os.environ; print('gpus', e['CUDA_VISIBLE_DEVICES'], e['GRAVITY_SITE'])\""


def submit(stub, **kw) -> pb.Job:
    spec = pb.JobSpec(name=kw.pop("name", "e2e"), kind=pb.JOB_KIND_BATCH, runtime_s=60, **kw)
    return stub.SubmitJob(pb.SubmitJobRequest(spec=spec)).job


def wait(stub, job_id: str, states: set[int], timeout_s: float = 90.0) -> pb.Job:
    end = time.time() + timeout_s
    while time.time() < end:
        job = stub.GetJob(pb.GetJobRequest(id=job_id))
        if job.state in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{job_id}: still {pb.JobState.Name(job.state)} ({job.reason})")


def test_runs_on_ray_and_succeeds_with_its_gpus(stub):
    job = submit(
        stub,
        gpus=2,
        single_node=True,
        entrypoint=PRINT_GPUS,
    )
    running_or_done = wait(stub, job.id, {pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED})
    assert running_or_done.placement.site
    done = wait(stub, job.id, {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED})
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert done.exit_code == 0
    line = next(x for x in done.log_tail.splitlines() if x.startswith("gpus "))
    _, devices, site = line.split()
    assert len(devices.split(",")) == 2 and site == done.placement.site
    assert [a.state for a in done.attempts] == [pb.JOB_STATE_SUCCEEDED]


def test_failing_entrypoint_ends_failed_with_its_exit_code(stub):
    job = submit(stub, gpus=1, entrypoint="sh -c 'echo about to fail; exit 3'")
    done = wait(stub, job.id, {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED})
    assert done.state == pb.JOB_STATE_FAILED
    assert done.exit_code == 3 and "about to fail" in done.log_tail
    assert "exit code 3" in done.reason


def test_cancel_stops_a_running_job(stub, service):
    job = submit(stub, gpus=1, entrypoint="sleep 300")
    wait(stub, job.id, {pb.JOB_STATE_RUNNING})
    cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id, requested_by="e2e-test"))
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.cancelled_by == "e2e-test"
    sites = {s.name: s for s in stub.ListSites(pb.ListSitesRequest()).sites}
    assert sites[cancelled.placement.site].free_gpus == sites[cancelled.placement.site].total_gpus
    end = time.time() + 30
    while job.id in service.executor.active() and time.time() < end:
        time.sleep(0.2)
    assert job.id not in service.executor.active(), "Ray still runs the cancelled job"
