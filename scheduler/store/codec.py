"""Domain types <-> JSON for durable stores, with a schema version on every record.

Every stored record is a JSON object whose "v" is `SCHEMA_VERSION`. A record written by a
version this Gravity does not know raises `SchemaError` naming the record, so an operator sees
"migrate or point at another key prefix", never a traceback in a loop. Field names are the
domain's own (readable with redis-cli); floats round-trip exactly (JSON uses repr).

Bump SCHEMA_VERSION when a record's meaning changes, and teach `_upgrade` the old shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from placers.capacity import Demand
from placers.domain import (
    Attempt,
    CostBreakdown,
    DataMove,
    Dataset,
    InferenceSpec,
    Job,
    JobKind,
    JobSpec,
    JobState,
    NodeBinding,
    Placement,
)
from scheduler.finops.model import AuditEntry, AuditKind, BreachPolicy, Budget, BudgetAlert, BudgetPeriod
from scheduler.store.base import SchemaError

SCHEMA_VERSION = 1

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _load(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{what}: not a Gravity record ({exc})") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"{what}: not a Gravity record (expected a JSON object)")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{what}: written with store schema version {version!r}; this Gravity reads version "
            f"{SCHEMA_VERSION}. Run the Gravity version that wrote it, migrate the data, or use another key prefix."
        )
    return obj


# ---------------------------------------------------------------------- jobs
#
# A job is stored as two records: its spec, written once at submission and never changed, and its
# status (everything else), rewritten at each transition and copied into each event. Keeping the
# spec out of the status makes every transition and every event a fraction of the size.


def encode_spec(spec: JobSpec) -> str:
    d = _spec_to_dict(spec)
    d["v"] = SCHEMA_VERSION
    return _dumps(d)


def decode_spec(raw: str | bytes, what: str) -> JobSpec:
    obj = _load(raw, what)
    try:
        return _spec_from_dict(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: malformed job spec record ({type(exc).__name__}: {exc})") from None


def encode_status(job: Job, placement_json: str | None = None) -> str:
    """The job without its spec. `placement_json`: the job's placement already encoded (a placement
    does not change while the job runs, so a store encodes it once per attempt)."""
    if placement_json is None or job.placement is None:
        return _dumps(status_to_dict(job))
    d = status_to_dict(job, {})
    del d["placement"]
    return f'{_dumps(d)[:-1]},"placement":{placement_json}}}'


def encode_placement(placement: Placement) -> str:
    return _dumps(placement_to_dict(placement))


def decode_status(raw: str | bytes, spec: JobSpec, what: str) -> Job:
    obj = _load(raw, what)
    try:
        return status_from_dict(obj, spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: malformed job record ({type(exc).__name__}: {exc})") from None


def status_to_dict(job: Job, placement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if placement is None and job.placement is not None:
        placement = placement_to_dict(job.placement)
    return {
        "v": SCHEMA_VERSION,
        "id": job.id,
        "state": job.state.value,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "placement": placement,
        "reason": job.reason,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "exit_code": job.exit_code,
        "log_tail": job.log_tail,
        "attempts": [
            [a.number, a.site, a.launched_at, a.ended_at, a.state.value, a.exit_code, a.cause] for a in job.attempts
        ],
        "cancelled_by": job.cancelled_by,
        "decided_at": job.decided_at,
        "health": job.health,
        "endpoint": job.endpoint,
        "replicas_ready": job.replicas_ready,
    }


def status_from_dict(d: Mapping[str, Any], spec: JobSpec) -> Job:
    placement = d["placement"]
    return Job(
        id=d["id"],
        spec=spec,
        state=JobState(d["state"]),
        created_at=d["created_at"],
        updated_at=d["updated_at"],
        placement=placement_from_dict(placement) if placement is not None else None,
        reason=d["reason"],
        started_at=d["started_at"],
        finished_at=d["finished_at"],
        exit_code=d["exit_code"],
        log_tail=d["log_tail"],
        attempts=tuple(Attempt(n, s, la, ea, JobState(st), ec, c) for n, s, la, ea, st, ec, c in d["attempts"]),
        cancelled_by=d["cancelled_by"],
        decided_at=d["decided_at"],
        # added later within schema 1: records written before have none (no service news)
        health=d.get("health", ""),
        endpoint=d.get("endpoint", ""),
        replicas_ready=d.get("replicas_ready", 0),
    )


def _spec_to_dict(s: JobSpec) -> dict[str, Any]:
    inf = s.inference
    return {
        "name": s.name,
        "kind": s.kind.value,
        "gpus": s.gpus,
        "entrypoint": s.entrypoint,
        "gpu_milli": s.gpu_milli,
        "gpu_models": list(s.gpu_models),
        "cpus": s.cpus,
        "memory_gb": s.memory_gb,
        "single_node": s.single_node,
        "runtime_s": s.runtime_s,
        "deadline_at": s.deadline_at,
        "priority": s.priority,
        "tags": dict(s.tags),
        "datasets": [
            d if isinstance(d, str) else [d.id, d.size_gb, list(d.replica_sites), d.classification] for d in s.datasets
        ],
        "allowed_jurisdictions": list(s.allowed_jurisdictions),
        "allowed_sites": list(s.allowed_sites),
        "max_cost_usd": s.max_cost_usd,
        "spot_ok": s.spot_ok,
        "inference": (
            None
            if inf is None
            else [inf.latency_slo_ms, list(inf.user_regions), inf.replicas, inf.dedicated, inf.spread]
        ),
        "env": dict(s.env),
        "request_id": s.request_id,
        "max_retries": s.max_retries,
    }


def _spec_from_dict(d: Mapping[str, Any]) -> JobSpec:
    inf = d["inference"]
    return JobSpec(
        name=d["name"],
        kind=JobKind(d["kind"]),
        gpus=d["gpus"],
        entrypoint=d["entrypoint"],
        gpu_milli=d["gpu_milli"],
        gpu_models=tuple(d["gpu_models"]),
        cpus=d["cpus"],
        memory_gb=d["memory_gb"],
        single_node=d["single_node"],
        runtime_s=d["runtime_s"],
        deadline_at=d["deadline_at"],
        priority=d["priority"],
        tags=dict(d["tags"]),
        datasets=tuple(x if isinstance(x, str) else Dataset(x[0], x[1], tuple(x[2]), x[3]) for x in d["datasets"]),
        allowed_jurisdictions=tuple(d["allowed_jurisdictions"]),
        allowed_sites=tuple(d["allowed_sites"]),
        max_cost_usd=d["max_cost_usd"],
        spot_ok=d["spot_ok"],
        inference=None if inf is None else InferenceSpec(inf[0], tuple(inf[1]), inf[2], inf[3], inf[4]),
        env=dict(d["env"]),
        request_id=d["request_id"],
        max_retries=d["max_retries"],
    )


# ---------------------------------------------------------------------- placements


def placement_to_dict(p: Placement) -> dict[str, Any]:
    return {
        "site": p.site,
        "pool": p.pool,
        "gpu_model": p.gpu_model,
        "spot": p.spot,
        "start_at": p.start_at,
        "finish_at": p.finish_at,
        "cost": [p.cost.compute_usd, p.cost.egress_usd, p.cost.storage_usd],
        "transfer_s": p.transfer_s,
        "bindings": [[b.node, list(b.gpu_slots), b.gpu_milli, b.cpu_milli, b.memory_mib] for b in p.bindings],
        "data_moves": [
            [m.dataset_id, m.from_site, m.to_site, m.size_gb, m.egress_usd, m.transfer_s] for m in p.data_moves
        ],
        "explanation": p.explanation,
    }


def placement_from_dict(d: Mapping[str, Any]) -> Placement:
    return Placement(
        site=d["site"],
        pool=d["pool"],
        gpu_model=d["gpu_model"],
        spot=d["spot"],
        start_at=d["start_at"],
        finish_at=d["finish_at"],
        cost=CostBreakdown(*d["cost"]),
        transfer_s=d["transfer_s"],
        bindings=tuple(NodeBinding(n, tuple(slots), gm, cm, mm) for n, slots, gm, cm, mm in d["bindings"]),
        data_moves=tuple(DataMove(*m) for m in d["data_moves"]),
        explanation=d["explanation"],
    )


# ---------------------------------------------------------------------- allocations


def encode_allocation(placement_json: str, demand: Demand) -> str:
    """What a placed or running job holds: its placement (encoded) and the demand it took (for release)."""
    return f'{{"v":{SCHEMA_VERSION},"placement":{placement_json},"demand":{_dumps(_demand_to_list(demand))}}}'


def allocation_from_dict(d: Mapping[str, Any], what: str) -> tuple[Placement, Demand]:
    if d.get("v") != SCHEMA_VERSION:
        raise SchemaError(
            f"{what}: written with store schema version {d.get('v')!r}; this Gravity reads {SCHEMA_VERSION}"
        )
    try:
        g, gm, cm, mm, sn, r, sp = d["demand"]
        return placement_from_dict(d["placement"]), Demand(g, gm, cm, mm, sn, r, sp)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: malformed allocation record ({type(exc).__name__}: {exc})") from None


def decode_allocation(raw: str | bytes, what: str) -> tuple[Placement, Demand]:
    return allocation_from_dict(_load(raw, what), what)


def allocation_log_entry(added: Mapping[str, str], removed: Sequence[str]) -> str:
    """One allocation-log record: allocations added (job id -> encoded allocation) and job ids removed.
    Built from already-encoded allocations, so each is encoded once per commit."""
    adds = ",".join(f"{_dumps(job_id)}:{alloc}" for job_id, alloc in added.items())
    return f'{{"v":{SCHEMA_VERSION},"add":{{{adds}}},"del":{_dumps(list(removed))}}}'


def _demand_to_list(d: Demand) -> list[Any]:
    return [d.gpus, d.gpu_milli, d.cpu_milli, d.memory_mib, d.single_node, d.replicas, d.spread]


def load_record(raw: str | bytes, what: str) -> dict[str, Any]:
    """Any versioned record (log entries, launch records): the decoded object, or SchemaError."""
    return _load(raw, what)


# ---------------------------------------------------------------------- FinOps: budgets, alerts, audit


def encode_budget(b: Budget) -> str:
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "tag": b.tag,
            "value": b.value,
            "amount_usd": b.amount_usd,
            "on_breach": b.on_breach.value,
            "thresholds": list(b.thresholds),
            "period": b.period.value,
            "version": b.version,
            "updated_at": b.updated_at,
            "updated_by": b.updated_by,
        }
    )


def decode_budget(raw: str | bytes, what: str) -> Budget:
    d = _load(raw, what)
    try:
        return Budget(
            tag=d["tag"],
            value=d["value"],
            amount_usd=float(d["amount_usd"]),
            on_breach=BreachPolicy(d["on_breach"]),
            thresholds=tuple(float(t) for t in d["thresholds"]),
            period=BudgetPeriod(d["period"]),
            version=int(d["version"]),
            updated_at=float(d["updated_at"]),
            updated_by=d["updated_by"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: malformed budget record ({type(exc).__name__}: {exc})") from None


def encode_alert(a: BudgetAlert) -> str:
    """The alert without its seq (the store's stream entry id carries it)."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "budget_id": a.budget_id,
            "period": a.period,
            "threshold": a.threshold,
            "amount_usd": a.amount_usd,
            "accrued_usd": a.accrued_usd,
            "committed_usd": a.committed_usd,
            "on_breach": a.on_breach.value,
            "at": a.at,
        }
    )


def decode_alert(raw: str | bytes, seq: int, what: str) -> BudgetAlert:
    d = _load(raw, what)
    try:
        return BudgetAlert(
            budget_id=d["budget_id"],
            period=d["period"],
            threshold=float(d["threshold"]),
            amount_usd=float(d["amount_usd"]),
            accrued_usd=float(d["accrued_usd"]),
            committed_usd=float(d["committed_usd"]),
            on_breach=BreachPolicy(d["on_breach"]),
            at=float(d["at"]),
            seq=seq,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: malformed alert record ({type(exc).__name__}: {exc})") from None


def audit_record(e: AuditEntry) -> str:
    """One audit entry as stored (its seq comes from the store)."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "at": e.at,
            "kind": e.kind.value,
            "reason": e.reason,
            "job_id": e.job_id,
            "actor": e.actor,
            "site": e.site,
            "tags": dict(e.tags),
        }
    )


def audit_args(entries: Sequence[AuditEntry]) -> list[str]:
    """Audit entries as script arguments: their count, then job id and record of each."""
    out = [str(len(entries))]
    for e in entries:
        out += [e.job_id, audit_record(e)]
    return out


def decode_audit(raw: str | bytes, seq: int, what: str) -> AuditEntry:
    d = _load(raw, what)
    try:
        return AuditEntry(
            at=float(d["at"]),
            kind=AuditKind(d["kind"]),
            reason=d["reason"],
            job_id=d["job_id"],
            actor=d["actor"],
            site=d["site"],
            tags=dict(d["tags"]),
            seq=seq,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: malformed audit record ({type(exc).__name__}: {exc})") from None
