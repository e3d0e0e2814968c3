"""The gRPC API through a real stub against an in-process server on port 0 (virtual executor)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from scheduler.api.server import Server
from scheduler.app import build_app
from scheduler.settings import Settings


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    app = build_app(Settings(executor={"kind": "sim", "sim_speedup": 1000.0}, cycle={"tick_s": 0.01}))
    server = Server(app.service, "127.0.0.1:0", max_workers=16)
    server.start()
    app.service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(0)
        app.close()


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.SchedulerStub:
    return pb_grpc.SchedulerStub(channel)


def job_spec(**kw) -> pb.JobSpec:
    base = {"name": "t", "kind": "JOB_KIND_TRAINING", "gpus": 1, "runtime_s": 60, "entrypoint": "true"}
    base.update(kw)
    return json_format.ParseDict(base, pb.JobSpec())


def wait_state(stub, job_id, states, timeout_s=10.0) -> pb.Job:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = stub.GetJob(pb.GetJobRequest(id=job_id))
        if job.state in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}; last {pb.JobState.Name(job.state)}: {job.reason}")


def test_submit_runs_to_success(stub):
    resp = stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec(gpus=4, tags={"project": "llm", "cost_center": "cc-1"})))
    assert resp.created and resp.job.state == pb.JOB_STATE_PENDING
    job = wait_state(stub, resp.job.id, {pb.JOB_STATE_SUCCEEDED})
    assert job.placement.site and job.placement.cost.total_usd > 0
    assert job.spec.tags.project == "llm" and job.exit_code == 0


def test_batch_submit_and_idempotency(stub):
    specs = [job_spec(request_id=f"batch-{i}") for i in range(50)]
    first = stub.SubmitJobs(pb.SubmitJobsRequest(specs=specs))
    again = stub.SubmitJobs(pb.SubmitJobsRequest(specs=specs))
    assert all(r.created for r in first.results) and not any(r.created for r in again.results)
    assert [r.job.id for r in first.results] == [r.job.id for r in again.results]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"gpus": 0}, "spec.gpus"),
        ({"gpus": -1}, "spec.gpus"),
        ({"gpu_models": ["H900"]}, "spec.gpu_models[0]"),
        ({"deadline": "2001-01-01T00:00:00Z"}, "spec.deadline"),
        ({"datasets": [{"catalog_id": "nope"}]}, "spec.datasets[0].catalog_id"),
        ({"entrypoint": ""}, "spec.entrypoint"),
        ({"kind": "JOB_KIND_UNSPECIFIED"}, "spec.kind"),
        ({"runtime_s": 0}, "spec.runtime_s"),
        ({"datasets": [{}]}, "spec.datasets[0]"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(stub, spec, field):
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec(**spec)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":"), err.value.details()


def test_bad_batch_names_the_index_and_accepts_nothing(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(pb.SubmitJobsRequest(specs=[job_spec(name="ok-1"), job_spec(gpus=0)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("specs[1].gpus")
    listed = stub.ListJobs(pb.ListJobsRequest())
    assert not [j for j in listed.jobs if j.spec.name == "ok-1"]


def test_rejected_with_reason_and_explained(stub):
    spec = job_spec(datasets=[{"catalog_id": "eu-customer-support-2026"}], allowed_jurisdictions=["US"])
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec)).job
    job = wait_state(stub, job.id, {pb.JOB_STATE_REJECTED})
    assert "eu-gdpr" in job.reason
    ex = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=job.id))
    us = [c for c in ex.candidates if c.site == "aws-us-east-1"]
    assert us and not any(c.feasible for c in us)
    assert any("eu-customer-support-2026 is eu-gdpr" in r for c in us for r in c.reasons)


def test_explain_dry_run_eu_data_goes_to_eu(stub):
    spec = job_spec(gpus=8, single_node=True, datasets=[{"catalog_id": "eu-customer-support-2026"}])
    ex = stub.ExplainPlacement(pb.ExplainPlacementRequest(spec=spec))
    assert ex.chosen_site in {"onprem-fra", "aws-eu-central-1", "gcp-europe-west4", "azure-westeurope"}
    assert ex.candidates[0].chosen and ex.candidates[0].cost.total_usd > 0
    assert "excluded" in ex.summary and "eu-gdpr" in ex.summary
    assert stub.ListJobs(pb.ListJobsRequest()).jobs == []  # nothing submitted


def test_list_filters_and_pages(stub):
    ids = []
    for i in range(5):
        tags = {"project": "alpha" if i % 2 == 0 else "beta"}
        ids.append(stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec(name=f"l{i}", tags=tags))).job.id)
    alpha = stub.ListJobs(pb.ListJobsRequest(tags=["project=alpha"]))
    assert sorted(j.id for j in alpha.jobs) == sorted(ids[0::2])
    page1 = stub.ListJobs(pb.ListJobsRequest(page_size=2))
    page2 = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=page1.next_page_token))
    assert len(page1.jobs) == 2 and page1.next_page_token
    assert not {j.id for j in page1.jobs} & {j.id for j in page2.jobs}
    assert [j.id for j in page1.jobs] == ids[::-1][:2]  # newest first
    for bad, field in (
        ({"tags": ["nokey"]}, "tags[0]"),
        ({"page_size": 5000}, "page_size"),
        ({"site": "mars"}, "site"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(**bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    done = wait_state(stub, ids[0], {pb.JOB_STATE_SUCCEEDED})
    by_site = stub.ListJobs(pb.ListJobsRequest(site=done.placement.site, states=[pb.JOB_STATE_SUCCEEDED]))
    assert ids[0] in {j.id for j in by_site.jobs}


def test_cancel_and_not_found(stub):
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec(runtime_s=10**6))).job
    wait_state(stub, job.id, {pb.JOB_STATE_PLACED, pb.JOB_STATE_RUNNING})
    cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id, requested_by="alice", reason="no longer needed"))
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.cancelled_by == "alice"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(pb.GetJobRequest(id="j-unknown"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_one_job(stub):
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec(runtime_s=5))).job
    kinds: list[str] = []

    def watch():
        for ev in stub.WatchJobs(pb.WatchJobsRequest(job_id=job.id, from_start=True), timeout=10):
            kinds.append(ev.kind)
            if ev.kind == "succeeded":
                return

    t = threading.Thread(target=watch)
    t.start()
    t.join(12)
    assert kinds == ["submitted", "placed", "running", "succeeded"]


def test_sites_health_and_reflection(stub, channel):
    sites = stub.ListSites(pb.ListSitesRequest()).sites
    assert len(sites) == 10 and all(s.total_gpus > 0 and s.available for s in sites)
    assert {"onprem", "cloud"} == {s.kind for s in sites}
    ch = channel
    health = health_pb2_grpc.HealthStub(ch)
    assert health.Check(health_pb2.HealthCheckRequest(service="gravity.v1.Scheduler")).status == 1
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"gravity.v1.Scheduler", "grpc.health.v1.Health"} <= names
