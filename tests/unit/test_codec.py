"""The store codec: exact round trips of every domain record, and clear errors for foreign data."""

from __future__ import annotations

import json

import pytest

from placers.capacity import Demand
from placers.domain import (
    Attempt,
    CostBreakdown,
    DataMove,
    Dataset,
    InferenceSpec,
    Job,
    JobKind,
    JobState,
    NodeBinding,
    Placement,
)
from scheduler.store import codec
from scheduler.store.base import SchemaError
from tests.conftest import spec

PLACEMENT = Placement(
    site="onprem-fra",
    pool="a100",
    gpu_model="A100-80GB",
    spot=True,
    start_at=1_800_000_000.125,
    finish_at=None,
    cost=CostBreakdown(12.5, 0.1 + 0.2, 3e-7),
    transfer_s=42.0,
    bindings=(NodeBinding(3, (0, 1, 5), 1000, 16000, 65536), NodeBinding(4, (2,), 250)),
    data_moves=(DataMove("imagenet-21k", "onprem-sjc", "onprem-fra", 1300.0, 26.0, 208.0),),
    explanation="cheapest feasible: €0.42 less than aws",
)


def rich_job() -> Job:
    s = spec(
        name="träin «eu»",
        kind=JobKind.INFERENCE,
        runtime_s=0.0,
        gpu_milli=500,
        gpu_models=("A100-80GB", "H100-80GB"),
        cpus=7.5,
        memory_gb=31.25,
        single_node=True,
        priority=-3,
        tags={"team": "nlp", "free-form": "x=y"},
        datasets=("imagenet-21k", Dataset("inline-1", 12.5, ("onprem-fra", "aws-eu-central-1"), "eu-gdpr")),
        allowed_jurisdictions=("EU",),
        allowed_sites=("onprem-fra",),
        max_cost_usd=99.99,
        spot_ok=True,
        inference=InferenceSpec(80.0, ("eu-west",), 2, True, True),
        env={"A": "1", "PATH_EXTRA": "/opt/x"},
        request_id="req-ü-1",
        max_retries=2,
    )
    return Job(
        id="j-1",
        spec=s,
        state=JobState.RUNNING,
        created_at=1.5,
        updated_at=2.5,
        placement=PLACEMENT,
        reason="",
        started_at=2.0,
        finished_at=None,
        exit_code=None,
        log_tail="line 1\nline 2 ✓",
        attempts=(
            Attempt(1, "aws-eu-central-1", 1.6, 1.9, JobState.FAILED, 137, "infrastructure: lost"),
            Attempt(2, "onprem-fra", 2.0, None, JobState.RUNNING),
        ),
        cancelled_by="",
        decided_at=1.55,
        health="degraded",
        endpoint="10.0.0.7:41000",
        replicas_ready=1,
    )


def test_job_round_trips_exactly_with_and_without_a_preencoded_placement() -> None:
    job = rich_job()
    spec_back = codec.decode_spec(codec.encode_spec(job.spec), "spec")
    assert spec_back == job.spec
    plain = codec.encode_status(job)
    spliced = codec.encode_status(job, codec.encode_placement(PLACEMENT))
    assert json.loads(plain) == json.loads(spliced)
    assert codec.decode_status(spliced, spec_back, "job") == job
    pending = job.evolve(state=JobState.PENDING, placement=None, attempts=())
    assert codec.decode_status(codec.encode_status(pending, "ignored"), spec_back, "job") == pending
    # A status written before jobs carried service health (same schema) reads as no service news.
    older = json.loads(plain)
    for key in ("health", "endpoint", "replicas_ready"):
        del older[key]
    assert codec.decode_status(json.dumps(older), spec_back, "job") == job.evolve(
        health="", endpoint="", replicas_ready=0
    )


def test_allocation_and_log_entry_round_trip() -> None:
    demand = Demand(4, 1000, 8000, 1024, True, 2, True)
    raw = codec.encode_allocation(codec.encode_placement(PLACEMENT), demand)
    assert codec.decode_allocation(raw, "alloc") == (PLACEMENT, demand)
    entry = codec.load_record(codec.allocation_log_entry({"j-1": raw}, ("j-0",)), "log")
    assert entry["del"] == ["j-0"]
    assert codec.allocation_from_dict(entry["add"]["j-1"], "log") == (PLACEMENT, demand)


def test_foreign_records_are_schema_errors_naming_the_record() -> None:
    job = rich_job()
    record = json.loads(codec.encode_status(job))
    record["v"] = 2
    with pytest.raises(SchemaError, match=r"job j-1 in \{g\}:jobs: written with store schema version 2"):
        codec.decode_status(json.dumps(record), job.spec, "job j-1 in {g}:jobs")
    with pytest.raises(SchemaError, match="not a Gravity record"):
        codec.decode_spec("{nope", "spec of j-1")
    with pytest.raises(SchemaError, match="malformed job record"):
        codec.decode_status('{"v": 1, "id": "j-1"}', job.spec, "job j-1")


def test_evolve_is_dataclasses_replace():
    import dataclasses

    import pytest

    from placers.domain import Job, JobState
    from tests.conftest import spec

    job = Job(id="j-1", spec=spec(), state=JobState.PENDING, created_at=1.0, updated_at=1.0, reason="queued")
    changes = {"state": JobState.RUNNING, "updated_at": 2.0, "reason": "", "started_at": 2.0, "attempts": ()}
    assert job.evolve(**changes) == dataclasses.replace(job, **changes)
    assert job.evolve() == job and job.evolve() is not job
    assert job.reason == "queued"  # the original is untouched
    with pytest.raises(TypeError):
        job.evolve(no_such_field=1)
