"""The decision audit trail: an entry per decision, with the reason a person can read.

Built from the same `PlacementProblem` the placer decided on (texts from `placers.explain`),
and carried by the `Plan` (or `JobUpdate`) that applies the decision, so the store writes the
decision and its record together.

    placed      where, at what cost, and any budget it went past (allow-and-alert)
    rejected    why no site, or which budget refused it
    held        which budget holds it (once per hold, not every cycle it keeps waiting)
    excluded    sites ruled out by policy: "aws-us-east-1 excluded: dataset claims-2025 is hipaa ..."
    cancelled   by whom, and why
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from placers.domain import Job, Placement
from placers.explain import option_reasons
from placers.problem import PlacementProblem, Reason
from scheduler.finops.budgets import HELD_PREFIX, Verdict
from scheduler.finops.model import AuditEntry, AuditKind
from scheduler.store.base import Plan

#: Rules that exclude sites as a matter of policy (as opposed to shape, price or capacity).
POLICY = int(Reason.RESIDENCY | Reason.JURISDICTION | Reason.SITE_NOT_ALLOWED | Reason.LATENCY)


def placed_text(p: Placement, over_budget: Sequence[str] = ()) -> str:
    c = p.cost
    text = (
        f"placed at {p.site}/{p.pool} ({p.gpu_model}{', spot' if p.spot else ''}) for ${c.total_usd:,.2f}: "
        f"compute ${c.compute_usd:,.2f}, egress ${c.egress_usd:,.2f}, storage ${c.storage_usd:,.2f}"
    )
    if p.transfer_s > 0:
        text += f", {p.transfer_s / 60:.0f} min of data transfer"
    if over_budget:
        text += f"; over budget {', '.join(over_budget)} (allow and alert)"
    if p.explanation:
        text += f"; {p.explanation}"
    return text


def exclusions(
    problem: PlacementProblem, j: int, cache: dict[tuple[object, ...], list[tuple[str, list[str]]]] | None = None
) -> list[tuple[str, list[str]]]:
    """(reason, sites) for every policy rule that ruled sites out for job row j.

    Policy rules depend only on the job's policy inputs (datasets and their classification,
    allowed jurisdictions and sites, latency objective), so `cache` shares the answer between
    jobs with the same inputs."""
    spec = problem.specs[j]
    key = (
        tuple((d.id, d.classification) for d in problem.datasets[j]),
        spec.allowed_jurisdictions,
        spec.allowed_sites,
        (spec.inference.latency_slo_ms, spec.inference.user_regions) if spec.inference else None,
    )
    if cache is not None and key in cache:
        return cache[key]
    row = problem.reasons[j] & POLICY
    first: dict[tuple[int, int], int] = {}
    for col in np.flatnonzero(row).tolist():
        first.setdefault((int(problem.options.site[col]), int(row[col])), col)
    groups: dict[str, list[str]] = {}
    for (site_i, bits), option in first.items():
        site = problem.catalog.sites[site_i].name
        for text in option_reasons(problem, j, option, bits):
            sites = groups.setdefault(text, [])
            if site not in sites:
                sites.append(site)
    out = list(groups.items())
    if cache is not None:
        cache[key] = out
    return out


def plan_audit(
    problem: PlacementProblem, plan: Plan, verdict: Verdict, jobs: Mapping[str, Job], now: float
) -> tuple[AuditEntry, ...]:
    """Audit entries for the decisions of a plan (placements, rejections, new budget holds)."""
    row_of = {job_id: j for j, job_id in enumerate(problem.job_ids)}
    with_policy = np.flatnonzero((problem.reasons & POLICY).any(axis=1))
    policy_rows = {int(j) for j in with_policy}
    cache: dict[tuple[object, ...], list[tuple[str, list[str]]]] = {}
    out: list[AuditEntry] = []

    def excluded(job_id: str, j: int, tags: Mapping[str, str]) -> None:
        if j not in policy_rows:
            return
        for text, sites in exclusions(problem, j, cache):
            out.append(
                AuditEntry(
                    now,
                    AuditKind.EXCLUDED,
                    f"{', '.join(sites)} excluded: {text}",
                    job_id,
                    site=",".join(sites),
                    tags=tags,
                )
            )

    for job_id, placement in plan.placements.items():
        j = row_of[job_id]
        tags = problem.specs[j].tags
        text = placed_text(placement, verdict.over_budget.get(j, ()))
        out.append(AuditEntry(now, AuditKind.PLACED, text, job_id, site=placement.site, tags=tags))
        excluded(job_id, j, tags)
    for job_id, reason in plan.rejections.items():
        j = row_of[job_id]
        tags = problem.specs[j].tags
        out.append(AuditEntry(now, AuditKind.REJECTED, reason, job_id, tags=tags))
        excluded(job_id, j, tags)
    for j, hold in verdict.holds.items():
        job_id = problem.job_ids[j]
        before = jobs.get(job_id)
        if before is not None and before.reason.startswith(f"{HELD_PREFIX} {hold.key}:"):
            continue  # still held by the same budgets: recorded when the hold began
        out.append(AuditEntry(now, AuditKind.HELD, hold.reason, job_id, tags=problem.specs[j].tags))
    return tuple(out)


def cancel_audit(job: Job, by: str, reason: str, at: float) -> AuditEntry:
    site = job.placement.site if job.placement is not None else ""
    return AuditEntry(at, AuditKind.CANCELLED, reason, job.id, actor=by, site=site, tags=job.spec.tags)
