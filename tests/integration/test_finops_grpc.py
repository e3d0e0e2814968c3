"""FinOps over gRPC, in-process server on port 0 with a real stub and the sim executor (wall clock)."""

from __future__ import annotations

import csv
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gravity.v1 import finops_pb2 as fpb
from gravity.v1 import finops_pb2_grpc as fpb_grpc
from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from scheduler.api.convert import from_ts
from scheduler.api.server import Server
from scheduler.app import App, build_app
from scheduler.cli import main as gravity
from scheduler.finops.periods import parse_period
from scheduler.finops.showback import showback
from scheduler.settings import load_settings
from scheduler.store.base import JobQuery
from tests.redis_support import REDIS_URL, fresh_redis

TAXONOMY = {
    "cost_center": {"pattern": "cc-[0-9]{4}"},
    "project": {},
    "stage": {"required": False, "allowed": ["dev", "prod"]},
}


@contextmanager
def running(**overrides: Any) -> Iterator[tuple[App, grpc.Channel, str]]:
    settings = load_settings(
        **{
            "listen": "127.0.0.1:0",
            "executor.kind": "sim",
            "executor.sim_speedup": 7200.0,  # an hour of runtime passes in half a second
            "cycle.tick_s": 0.02,
            "cycle.retry_waiting_s": 0.2,
            "finops.tags": TAXONOMY,
            **overrides,
        }
    )
    app = build_app(settings)
    server = Server(app.service, settings.listen, max_workers=16)
    app.service.start()
    server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(address)
    try:
        yield app, channel, address
    finally:
        channel.close()
        server.stop(0.5)
        app.close()


def job_spec(cc: str = "cc-0001", project: str = "llm", **kw: Any) -> pb.JobSpec:
    base: dict[str, Any] = {
        "name": "train",
        "kind": pb.JOB_KIND_TRAINING,
        "gpus": 8,
        "runtime_s": 3600.0,
        "entrypoint": "python train.py",
        "tags": pb.Tags(cost_center=cc, project=project),
    }
    base.update(kw)
    return pb.JobSpec(**base)


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_required_tags_are_invalid_argument_naming_the_tag():
    with running() as (_, channel, _addr):
        stub = pb_grpc.SchedulerStub(channel)
        untagged = job_spec()
        untagged.tags.Clear()
        untagged.tags.project = "llm"
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(pb.SubmitJobRequest(spec=untagged))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "spec.tags.cost_center: required tag missing (matching /cc-[0-9]{4}/)"
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(pb.SubmitJobRequest(spec=_with_stage("qa")))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("spec.tags.stage: value 'qa' is not allowed (expected one of dev, prod)")
        no_project = job_spec()
        no_project.tags.project = ""
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJobs(pb.SubmitJobsRequest(specs=[job_spec(), no_project]))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "specs[1].tags.project: required tag missing"
        with pytest.raises(grpc.RpcError) as err:
            stub.ExplainPlacement(pb.ExplainPlacementRequest(spec=untagged))
        assert err.value.details().startswith("spec.tags.cost_center")
        assert stub.ListJobs(pb.ListJobsRequest()).jobs == []  # nothing was accepted
        assert stub.SubmitJob(pb.SubmitJobRequest(spec=_with_stage("prod"))).created


def _with_stage(stage: str) -> pb.JobSpec:
    s = job_spec()
    s.tags.stage = stage
    return s


def test_health_and_reflection_list_the_finops_service():
    with running() as (_, channel, _addr):
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="gravity.v1.FinOps"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert {"gravity.v1.Scheduler", "gravity.v1.FinOps", "grpc.health.v1.Health"} <= names


def test_budgets_are_managed_over_grpc():
    with running() as (_, channel, _addr):
        fin = fpb_grpc.FinOpsStub(channel)
        b = fpb.Budget(tag="cost_center", value="cc-0001", amount_usd=500.0, on_breach=fpb.BREACH_POLICY_REJECT)
        created = fin.CreateBudget(fpb.CreateBudgetRequest(budget=b, requested_by="ana"))
        assert created.budget.id == "cost_center=cc-0001" and created.budget.version == 1
        assert list(created.budget.thresholds) == [0.5, 0.8, 1.0] and created.remaining_usd == 500.0
        with pytest.raises(grpc.RpcError) as err:
            fin.CreateBudget(fpb.CreateBudgetRequest(budget=b))
        assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
        b.amount_usd = 800.0
        updated = fin.UpdateBudget(fpb.UpdateBudgetRequest(budget=b, expected_version=1, requested_by="bob"))
        assert updated.budget.version == 2 and updated.budget.amount_usd == 800.0
        with pytest.raises(grpc.RpcError) as err:
            fin.UpdateBudget(fpb.UpdateBudgetRequest(budget=b, expected_version=1))
        assert err.value.code() is grpc.StatusCode.ABORTED and "version 2, not 1" in err.value.details()
        bad = fpb.Budget(tag="cost_center", value="cc-0002", amount_usd=-1)
        with pytest.raises(grpc.RpcError) as err:
            fin.CreateBudget(fpb.CreateBudgetRequest(budget=bad))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("budget.amount_usd:")
        bad = fpb.Budget(tag="project", value="x", amount_usd=1, thresholds=[0.5, 0.5])
        with pytest.raises(grpc.RpcError) as err:
            fin.CreateBudget(fpb.CreateBudgetRequest(budget=bad))
        assert err.value.details().startswith("budget.thresholds:")
        fin.CreateBudget(fpb.CreateBudgetRequest(budget=fpb.Budget(tag="project", value="llm", amount_usd=50)))
        listed = fin.ListBudgets(fpb.ListBudgetsRequest())
        assert [s.budget.id for s in listed.budgets] == ["cost_center=cc-0001", "project=llm"]
        assert fin.GetBudget(fpb.GetBudgetRequest(id="project=llm")).budget.on_breach == fpb.BREACH_POLICY_HOLD
        removed = fin.DeleteBudget(fpb.DeleteBudgetRequest(id="project=llm", requested_by="cy"))
        assert removed.amount_usd == 50
        with pytest.raises(grpc.RpcError) as err:
            fin.GetBudget(fpb.GetBudgetRequest(id="project=llm"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            fin.DeleteBudget(fpb.DeleteBudgetRequest(id="project=llm"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        trail = fin.QueryAudit(fpb.QueryAuditRequest(kinds=["budget_changed"])).entries
        assert [e.reason.split(":")[0] for e in trail] == [
            "budget cost_center=cc-0001 created",
            "budget cost_center=cc-0001 updated",
            "budget project=llm created",
            "budget project=llm deleted",
        ]
        assert [e.actor for e in trail][:2] == ["ana", "bob"] and trail[3].actor == "cy"
        assert trail[2].actor.startswith("ipv4:127.0.0.1:")  # no requested_by: the peer is recorded
        assert "amount $500.00 -> $800.00" in trail[1].reason


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_audit_entries_exist_for_every_decision(store):
    overrides = {}
    if store == "redis":
        fresh_redis().close()
        overrides["store_url"] = REDIS_URL
    with running(**overrides) as (app, channel, _addr):
        stub = pb_grpc.SchedulerStub(channel)
        fin = fpb_grpc.FinOpsStub(channel)
        long = 30 * 86400.0  # runs (virtually) for the whole test: its committed cost holds the budget
        need = (
            stub.ExplainPlacement(pb.ExplainPlacementRequest(spec=job_spec(cc="cc-0009", runtime_s=long)))
            .candidates[0]
            .cost
        )
        fin.CreateBudget(
            fpb.CreateBudgetRequest(
                budget=fpb.Budget(tag="cost_center", value="cc-0009", amount_usd=need.total_usd * 1.5)
            )
        )
        fin.CreateBudget(
            fpb.CreateBudgetRequest(
                budget=fpb.Budget(tag="project", value="tiny", amount_usd=0.01, on_breach=fpb.BREACH_POLICY_REJECT)
            )
        )
        hipaa = job_spec(cc="cc-0002", datasets=[pb.DatasetRef(catalog_id="claims-2025")], runtime_s=600.0)
        never = job_spec(cc="cc-0002", gpus=4000, single_node=True)  # no node has 4000 GPUs
        held_a, held_b = job_spec(cc="cc-0009", runtime_s=long), job_spec(cc="cc-0009", runtime_s=long)
        tiny = job_spec(cc="cc-0003", project="tiny")
        service = job_spec(
            cc="cc-0004",
            kind=pb.JOB_KIND_INFERENCE,
            runtime_s=0,
            gpus=1,
            inference=pb.InferenceSpec(replicas=1, dedicated=True),
        )
        plain = [job_spec(cc="cc-0001", runtime_s=1800.0) for _ in range(5)]
        reply = stub.SubmitJobs(pb.SubmitJobsRequest(specs=[hipaa, never, held_a, held_b, tiny, service, *plain]))
        ids = [r.job.id for r in reply.results]
        j_hipaa, j_never, j_a, j_b, j_tiny, j_service = ids[:6]

        def job(i: str) -> pb.Job:
            return stub.GetJob(pb.GetJobRequest(id=i))

        wait_for(lambda: job(j_service).state == pb.JOB_STATE_RUNNING, what="the service to run")
        stub.CancelJob(pb.CancelJobRequest(id=j_service, requested_by="alice", reason="replaced by v2"))
        wait_for(
            lambda: all(job(i).state == pb.JOB_STATE_SUCCEEDED for i in [j_hipaa, *ids[6:]]),
            what="the plain jobs to finish",
        )
        assert job(j_never).state == pb.JOB_STATE_REJECTED
        assert job(j_tiny).state == pb.JOB_STATE_REJECTED and "rejected by budget project=tiny" in job(j_tiny).reason
        states = sorted([job(j_a).state, job(j_b).state])
        assert states == [pb.JOB_STATE_PENDING, pb.JOB_STATE_RUNNING]  # one of the two cc-0009 jobs is held
        held = j_a if job(j_a).state == pb.JOB_STATE_PENDING else j_b

        def audit(**kw: Any) -> list[fpb.AuditEntry]:
            return list(fin.QueryAudit(fpb.QueryAuditRequest(page_size=1000, **kw)).entries)

        # Every placement and rejection the job events report has its audit entry, with the same facts.
        events = app.store.events(0)
        decided = [(str(e.kind), e.job.id) for e in events if e.kind in ("placed", "rejected", "cancelled")]
        assert len(decided) >= len(ids)
        for kind, job_id in decided:
            mine = [e for e in audit(job_id=job_id) if e.kind == kind]
            assert mine, f"no {kind} audit entry for {job_id}"
            final = job(job_id)
            if kind == "placed":
                assert mine[0].site == final.placement.site and mine[0].reason.startswith(
                    f"placed at {final.placement.site}/"
                )
            if kind == "rejected":
                assert mine[0].reason == final.reason
        (held_entry,) = audit(job_id=held, kinds=["held"])
        assert held_entry.reason.startswith("held for budget cost_center=cc-0009: ")
        (cancel,) = audit(job_id=j_service, kinds=["cancelled"])
        assert (cancel.actor, cancel.reason, cancel.site) == ("alice", "replaced by v2", "onprem-fra")
        excluded = audit(job_id=j_hipaa, kinds=["excluded"])
        assert any(
            e.reason.startswith("onprem-fra, aws-eu-central-1") and "excluded: dataset claims-2025 is hipaa" in e.reason
            for e in excluded
        ), [e.reason for e in excluded]
        assert audit(job_id=j_never, kinds=["rejected"])[0].reason.startswith("no site can ever run this job")
        # ... and the trail answers by tag and by time.
        by_tag = audit(tags=["cost_center=cc-0002"])
        assert {e.job_id for e in by_tag} == {j_hipaa, j_never} and all(
            e.tags["cost_center"] == "cc-0002" for e in by_tag
        )
        everything = audit()
        middle = everything[len(everything) // 2].at
        later = audit(since=middle)
        assert later and all((e.at.seconds, e.at.nanos) >= (middle.seconds, middle.nanos) for e in later)
        with pytest.raises(grpc.RpcError) as err:
            fin.QueryAudit(fpb.QueryAuditRequest(kinds=["promoted"]))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("kinds[0]")
        page = fin.QueryAudit(fpb.QueryAuditRequest(page_size=3))
        rest = fin.QueryAudit(fpb.QueryAuditRequest(page_size=1000, page_token=page.next_page_token))
        assert [e.seq for e in [*page.entries, *rest.entries]] == [e.seq for e in everything]


def test_cost_report_alert_stream_and_the_cli(tmp_path, capsys):
    with running() as (app, channel, address):
        stub = pb_grpc.SchedulerStub(channel)
        fin = fpb_grpc.FinOpsStub(channel)
        one = (
            stub.ExplainPlacement(pb.ExplainPlacementRequest(spec=job_spec(cc="cc-0007"))).candidates[0].cost.total_usd
        )
        fin.CreateBudget(
            fpb.CreateBudgetRequest(
                budget=fpb.Budget(
                    tag="cost_center", value="cc-0007", amount_usd=one * 2.5, on_breach=fpb.BREACH_POLICY_ALERT
                )
            )
        )
        alerts: list[fpb.BudgetAlert] = []
        stream = fin.WatchAlerts(fpb.WatchAlertsRequest())

        def follow() -> None:
            try:
                alerts.extend(stream)
            except grpc.RpcError:  # cancelled below (or the server is stopping)
                return

        threading.Thread(target=follow, daemon=True).start()
        time.sleep(0.2)
        reply = stub.SubmitJobs(
            pb.SubmitJobsRequest(
                specs=[job_spec(cc="cc-0007") for _ in range(3)] + [job_spec(cc="cc-0008", project="x")]
            )
        )
        ids = [r.job.id for r in reply.results]
        wait_for(lambda: len(alerts) >= 3, what="three alerts")
        stream.cancel()
        assert [(a.budget_id, a.threshold) for a in alerts] == [("cost_center=cc-0007", t) for t in (0.5, 0.8, 1.0)]
        assert alerts[-1].spend_usd >= alerts[-1].amount_usd and alerts[-1].on_breach == fpb.BREACH_POLICY_ALERT
        wait_for(
            lambda: all(stub.GetJob(pb.GetJobRequest(id=i)).state == pb.JOB_STATE_SUCCEEDED for i in ids),
            what="the jobs to finish",
        )
        report = fin.CostReport(fpb.CostReportRequest(by=["cost_center"]))
        rows = {r.group[0]: r for r in report.rows}
        assert set(rows) == {"cc-0007", "cc-0008"} and rows["cc-0007"].jobs == 3
        assert report.total.cost.total_usd == pytest.approx(sum(r.cost.total_usd for r in report.rows))
        # What the RPC says is the pure showback over the same jobs (the simulator calls that function).
        period = parse_period(report.period)
        jobs = app.store.list_jobs(JobQuery(page_size=100))[0]
        local = showback(jobs, ["cost_center"], period, from_ts(report.as_of), params=app.service.governance.params)
        assert [(r.group, r.jobs) for r in local.rows] == [(tuple(r.group), r.jobs) for r in report.rows]
        for mine, theirs in zip(local.rows, report.rows, strict=True):
            assert theirs.cost.total_usd == pytest.approx(mine.costs.total_usd, rel=1e-9)
            assert theirs.gpu_hours == pytest.approx(mine.costs.gpu_hours, rel=1e-9)
        # The sim executor compresses an hour into half a second: the cost is for the time really held.
        assert 0 < rows["cc-0007"].cost.total_usd < 3 * one
        with pytest.raises(grpc.RpcError) as err:
            fin.CostReport(fpb.CostReportRequest(period="2026-13"))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("period:")

        # The CLI: CSV to a file, budgets, the audit trail.
        def cli(*argv: str) -> int:
            return gravity([*argv, "--server", address])

        out = tmp_path / "nov.csv"
        assert cli("cost", "--by", "cost_center,project", "--format", "csv", "-o", str(out)) == 0
        with out.open(newline="") as f:
            table = list(csv.DictReader(f))
        assert [r["cost_center"] for r in table] == ["cc-0007", "cc-0008"]
        assert float(table[0]["total_usd"]) == pytest.approx(rows["cc-0007"].cost.total_usd, abs=0.01)
        assert cli("cost", "--by", "project") == 0
        text = capsys.readouterr().out
        assert "Spend by project for " in text and "llm" in text and "TOTAL" in text
        assert cli("budget", "update", "cost_center=cc-0007", "--amount-usd", "9999", "--by", "dana") == 0
        assert cli("budget", "list") == 0
        text = capsys.readouterr().out
        assert "cost_center=cc-0007" in text and "$9,999.00" in text and "50%,80%,100%" in text
        assert cli("audit", "--job", ids[0]) == 0
        assert "placed at" in capsys.readouterr().out
        assert (
            cli(
                "budget", "create", "project=x", "--amount-usd", "10", "--on-breach", "reject", "--thresholds", "90,100"
            )
            == 0
        )
        assert cli("budget", "create", "project=x", "--amount-usd", "10") == 1
        assert "ALREADY_EXISTS" in capsys.readouterr().err


def test_cli_errors_are_clear(capsys):
    port = _free_port()
    assert gravity(["cost", "--server", f"127.0.0.1:{port}"]) == 1
    assert f"cannot reach the Gravity server at 127.0.0.1:{port}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        gravity(["budget", "create", "cc-1", "--amount-usd", "5"])
    assert exit_.value.code == 2
    assert "expected TAG=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gravity(["budget", "create", "cost_center=cc-1", "--amount-usd", "5", "--thresholds", "50,abc"])
    assert "expected percentages" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_endpoint_serves_the_metrics():
    port = _free_port()
    with running(metrics_port=port) as (_, channel, _addr):
        stub = pb_grpc.SchedulerStub(channel)
        ids = [r.job.id for r in stub.SubmitJobs(pb.SubmitJobsRequest(specs=[job_spec() for _ in range(4)])).results]
        wait_for(
            lambda: all(stub.GetJob(pb.GetJobRequest(id=i)).state == pb.JOB_STATE_SUCCEEDED for i in ids),
            what="the jobs to finish",
        )
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    metrics = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line and line[0] != "#"
    }
    assert metrics["gravity_queue_depth"] == 0
    assert metrics['gravity_jobs{state="succeeded"}'] == 4
    assert metrics['gravity_decisions_total{outcome="placed"}'] == 4
    assert metrics['gravity_decision_latency_seconds_count{outcome="placed"}'] == 4
    assert metrics['gravity_decision_latency_seconds_bucket{le="5.0",outcome="placed"}'] == 4
    assert metrics["gravity_decisions_per_second"] > 0
    assert metrics['gravity_spend_usd{cost_center="cc-0001",kind="compute"}'] > 0
    assert 'gravity_gpu_utilisation_ratio{site="onprem-sjc"}' in metrics
    assert metrics['gravity_gpus_total{site="onprem-sjc"}'] == 224
