"""The only mapping between gravity.v1 protobuf messages and domain types."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from gravity.v1 import scheduler_pb2 as pb
from placers.domain import (
    WELL_KNOWN_TAGS,
    Attempt,
    CostBreakdown,
    Dataset,
    InferenceSpec,
    Job,
    JobKind,
    JobSpec,
    JobState,
    Placement,
)
from placers.explain import Candidate, Explanation
from scheduler.admission import InvalidSpec
from scheduler.service import SiteView
from scheduler.store.base import JobEvent

KIND_FROM_PB = {
    pb.JOB_KIND_TRAINING: JobKind.TRAINING,
    pb.JOB_KIND_BATCH: JobKind.BATCH,
    pb.JOB_KIND_INFERENCE: JobKind.INFERENCE,
}
KIND_TO_PB = {v: k for k, v in KIND_FROM_PB.items()}
STATE_TO_PB = {
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.PLACED: pb.JOB_STATE_PLACED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    JobState.REJECTED: pb.JOB_STATE_REJECTED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}


def ts(t: float) -> Timestamp:
    out = Timestamp()
    set_ts(out, t)
    return out


def set_ts(field: Timestamp, t: float) -> None:
    """Write t (Unix seconds) into a Timestamp field in place (no temporary message)."""
    field.seconds, field.nanos = divmod(round(t * 1e9), 1_000_000_000)


def from_ts(t: Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


# ---------------------------------------------------------------------- JobSpec


def spec_from_proto(m: pb.JobSpec) -> JobSpec:
    """Decode a JobSpec; shape errors (unknown enum, empty oneof) raise InvalidSpec naming the field.
    Semantic checks against the catalog are admission's (scheduler.admission.validate)."""
    if m.kind not in KIND_FROM_PB:
        raise InvalidSpec("kind", "must be JOB_KIND_TRAINING, JOB_KIND_BATCH or JOB_KIND_INFERENCE")
    # Empty repeated and map fields are the common case: test them before copying (a batch of
    # thousands of specs goes through here on one core).
    datasets: list[str | Dataset] = []
    for i, ref in enumerate(m.datasets or ()):
        which = ref.WhichOneof("source")
        if which == "catalog_id":
            datasets.append(ref.catalog_id)
        elif which == "inline":
            d = ref.inline
            datasets.append(Dataset(d.id, d.size_gb, tuple(d.replica_sites), d.classification or "public"))
        else:
            raise InvalidSpec(f"datasets[{i}]", "set catalog_id or inline")
    wire_tags = m.tags
    tags = dict(wire_tags.extra) if wire_tags.extra else {}
    for key in WELL_KNOWN_TAGS:
        value = getattr(wire_tags, key)
        if value:
            if key in tags:
                raise InvalidSpec(f"tags.extra.{key}", f"use tags.{key} instead")
            tags[key] = value
    inference = None
    if m.HasField("inference"):
        inf = m.inference
        inference = InferenceSpec(
            latency_slo_ms=inf.latency_slo_ms,
            user_regions=tuple(inf.user_regions),
            replicas=inf.replicas or 1,
            dedicated=inf.dedicated,
            spread=inf.spread,
        )
    kind = KIND_FROM_PB[m.kind]
    if kind is JobKind.INFERENCE and inference is None:
        inference = InferenceSpec()
    return JobSpec(
        name=m.name,
        kind=kind,
        gpus=m.gpus,
        gpu_milli=m.gpu_milli or 1000,
        gpu_models=tuple(m.gpu_models) if m.gpu_models else (),
        cpus=m.cpus,
        memory_gb=m.memory_gb,
        single_node=m.single_node,
        runtime_s=m.runtime_s,
        deadline_at=from_ts(m.deadline) if m.HasField("deadline") else None,
        priority=m.priority,
        tags=tags,
        datasets=tuple(datasets),
        allowed_jurisdictions=tuple(m.allowed_jurisdictions) if m.allowed_jurisdictions else (),
        allowed_sites=tuple(m.allowed_sites) if m.allowed_sites else (),
        max_cost_usd=m.max_cost_usd if m.HasField("max_cost_usd") else None,
        spot_ok=m.spot_ok,
        inference=inference,
        entrypoint=m.entrypoint,
        env=dict(m.env) if m.env else {},
        request_id=m.request_id,
        max_retries=m.max_retries,
    )


def spec_to_proto(s: JobSpec) -> pb.JobSpec:
    m = pb.JobSpec(
        name=s.name,
        kind=KIND_TO_PB[s.kind],
        gpus=s.gpus,
        gpu_milli=s.gpu_milli,
        gpu_models=s.gpu_models,
        cpus=s.cpus,
        memory_gb=s.memory_gb,
        single_node=s.single_node,
        runtime_s=s.runtime_s,
        priority=s.priority,
        allowed_jurisdictions=s.allowed_jurisdictions,
        allowed_sites=s.allowed_sites,
        spot_ok=s.spot_ok,
        entrypoint=s.entrypoint,
        env=dict(s.env),
        request_id=s.request_id,
        max_retries=s.max_retries,
    )
    if s.deadline_at is not None:
        m.deadline.CopyFrom(ts(s.deadline_at))
    if s.max_cost_usd is not None:
        m.max_cost_usd = s.max_cost_usd
    _tags_to_proto(s.tags, m.tags)
    for ref in s.datasets:
        if isinstance(ref, str):
            m.datasets.add(catalog_id=ref)
        else:
            m.datasets.add(
                inline=pb.Dataset(
                    id=ref.id, size_gb=ref.size_gb, replica_sites=ref.replica_sites, classification=ref.classification
                )
            )
    if s.inference is not None:
        i = s.inference
        m.inference.CopyFrom(
            pb.InferenceSpec(
                latency_slo_ms=i.latency_slo_ms,
                user_regions=i.user_regions,
                replicas=i.replicas,
                dedicated=i.dedicated,
                spread=i.spread,
            )
        )
    return m


def _tags_to_proto(tags: Mapping[str, str], out: pb.Tags) -> None:
    for key, value in tags.items():
        if key in WELL_KNOWN_TAGS:
            setattr(out, key, value)
        else:
            out.extra[key] = value


# ---------------------------------------------------------------------- Job


def cost_to_proto(c: CostBreakdown) -> pb.CostBreakdown:
    return pb.CostBreakdown(
        compute_usd=c.compute_usd, egress_usd=c.egress_usd, storage_usd=c.storage_usd, total_usd=c.total_usd
    )


def placement_to_proto(p: Placement) -> pb.Placement:
    m = pb.Placement(
        site=p.site,
        pool=p.pool,
        gpu_model=p.gpu_model,
        spot=p.spot,
        cost=cost_to_proto(p.cost),
        data_transfer_s=p.transfer_s,
        explanation=p.explanation,
    )
    m.estimated_start.CopyFrom(ts(p.start_at))
    if p.finish_at is not None:
        m.estimated_completion.CopyFrom(ts(p.finish_at))
    for mv in p.data_moves:
        m.data_moves.add(
            dataset_id=mv.dataset_id,
            from_site=mv.from_site,
            to_site=mv.to_site,
            size_gb=mv.size_gb,
            egress_usd=mv.egress_usd,
            transfer_s=mv.transfer_s,
        )
    for b in p.bindings:
        m.nodes.add(node=b.node, gpu_slots=b.gpu_slots, gpu_milli=b.gpu_milli)
    return m


def _attempt_to_proto(a: Attempt) -> pb.Attempt:
    m = pb.Attempt(number=a.number, site=a.site, state=STATE_TO_PB[a.state], cause=a.cause)
    m.launched_at.CopyFrom(ts(a.launched_at))
    if a.ended_at is not None:
        m.ended_at.CopyFrom(ts(a.ended_at))
    if a.exit_code is not None:
        m.exit_code = a.exit_code
    return m


_JOB_SCALARS = ("reason", "log_tail", "cancelled_by", "health", "endpoint", "replicas_ready")


def job_to_proto(j: Job, spec: pb.JobSpec | None = None) -> pb.Job:
    """`spec`: the wire spec the job was created from, when at hand (saves re-encoding it).
    Only fields with a value are set: a batch answer encodes thousands of fresh jobs."""
    m = pb.Job(id=j.id, spec=spec if spec is not None else spec_to_proto(j.spec), state=STATE_TO_PB[j.state])
    for name in _JOB_SCALARS:
        value = getattr(j, name)
        if value:
            setattr(m, name, value)
    if j.attempts:
        m.attempts.extend(_attempt_to_proto(a) for a in j.attempts)
    if j.placement is not None:
        m.placement.CopyFrom(placement_to_proto(j.placement))
    set_ts(m.created_at, j.created_at)
    set_ts(m.updated_at, j.updated_at)
    if j.started_at is not None:
        set_ts(m.started_at, j.started_at)
    if j.finished_at is not None:
        set_ts(m.finished_at, j.finished_at)
    if j.exit_code is not None:
        m.exit_code = j.exit_code
    if j.decided_at is not None:
        set_ts(m.decided_at, j.decided_at)
    return m


def event_to_proto(e: JobEvent) -> pb.JobEvent:
    m = pb.JobEvent(seq=e.seq, kind=str(e.kind), job=job_to_proto(e.job))
    m.at.CopyFrom(ts(e.at))
    return m


# ---------------------------------------------------------------------- explain, sites


def _candidate_to_proto(c: Candidate) -> pb.Candidate:
    m = pb.Candidate(
        site=c.site,
        pool=c.pool,
        gpu_model=c.gpu_model,
        spot=c.spot,
        cost=cost_to_proto(c.cost),
        transfer_s=c.transfer_s,
        runtime_s=c.runtime_s,
        free_gpus=c.free_gpus,
        feasible=c.feasible,
        reasons=c.reasons,
        chosen=c.chosen,
        cost_delta_usd=c.cost_delta_usd,
        time_delta_s=c.time_delta_s,
    )
    if c.finish_at is not None:
        m.estimated_completion.CopyFrom(ts(c.finish_at))
    return m


def explanation_to_proto(e: Explanation, job_id: str = "") -> pb.ExplainPlacementResponse:
    return pb.ExplainPlacementResponse(
        job_id=job_id,
        summary=e.summary,
        chosen_site=e.chosen.site if e.chosen else "",
        candidates=[_candidate_to_proto(c) for c in e.candidates],
    )


def site_to_proto(v: SiteView) -> pb.Site:
    s = v.site
    m = pb.Site(
        name=s.name,
        kind=str(s.kind),
        provider=s.provider,
        jurisdiction=s.jurisdiction,
        region=s.region,
        total_gpus=v.total_gpus,
        free_gpus=v.free_gpus,
        storage_usd_per_gb_month=s.storage_usd_per_gb_month,
        rtt_ms=dict(s.rtt_ms),
        available=v.available,
    )
    if s.burst_quota_gpus is not None:
        m.burst_quota_gpus = s.burst_quota_gpus
    for p in v.pools:
        pm = m.pools.add(
            name=p.name,
            gpu_model=p.gpu_model,
            gpus_per_node=p.gpus_per_node,
            nodes=p.nodes,
            total_gpus=p.total_gpus,
            free_gpus=p.free_gpus,
            usd_per_gpu_hour=p.usd_per_gpu_hour,
            dedicated=p.dedicated,
            elastic=p.elastic,
        )
        if p.spot_usd_per_gpu_hour is not None:
            pm.spot_usd_per_gpu_hour = p.spot_usd_per_gpu_hour
    return m
