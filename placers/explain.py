"""Human-readable reasons: why a job went where it went, and why not elsewhere.

Everything here reads a `PlacementProblem`; nothing is recomputed differently from what the
placers saw, so an explanation can never disagree with a decision.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from placers.capacity import FULL
from placers.domain import CostBreakdown
from placers.problem import PERMANENT, REASON_TEXT, PlacementProblem, Reason


@dataclass(frozen=True, slots=True)
class Candidate:
    option: int
    site: str
    pool: str
    gpu_model: str
    spot: bool
    cost: CostBreakdown
    transfer_s: float
    runtime_s: float
    finish_at: float | None
    free_gpus: float
    feasible: bool  # could take the job now
    reasons: tuple[str, ...]
    chosen: bool = False
    cost_delta_usd: float = 0.0  # vs the chosen option
    time_delta_s: float = 0.0  # finish vs the chosen option


@dataclass(frozen=True, slots=True)
class Explanation:
    summary: str
    candidates: tuple[Candidate, ...]  # chosen first, then feasible by cost, then the rest
    chosen: Candidate | None


def clock_text(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def option_reasons(problem: PlacementProblem, j: int, o: int, bits: int | None = None) -> list[str]:
    """Specific reasons option o cannot take job j, e.g. 'dataset claims-2025 is hipaa (allowed: US)'."""
    bits = int(problem.reasons[j, o]) if bits is None else bits
    if bits & int(PERMANENT):
        bits &= int(PERMANENT)  # a rule that never clears says it all; capacity is beside the point
    spec = problem.specs[j]
    cat = problem.catalog
    pool = cat.pools[int(problem.options.pool[o])]
    site = cat.site(pool.site)
    out: list[str] = []
    for r in Reason:
        if not bits & r:
            continue
        if r is Reason.RESIDENCY:
            for d in problem.datasets[j]:
                allowed = cat.allowed_jurisdictions(d.classification)
                if allowed is not None and site.jurisdiction not in allowed:
                    out.append(f"dataset {d.id} is {d.classification} (must stay in {', '.join(allowed)})")
        elif r is Reason.GPU_MODEL:
            out.append(f"GPU model {pool.gpu_model} is not one of {', '.join(spec.gpu_models)}")
        elif r is Reason.NODE_SHAPE:
            if spec.single_node and spec.gpus > pool.gpus_per_node:
                out.append(f"needs {spec.gpus} GPUs on one node; nodes here have {pool.gpus_per_node}")
            elif spec.total_gpus > pool.max_gpus:
                out.append(f"needs {spec.total_gpus} GPUs; the pool has {pool.max_gpus}")
            else:
                out.append("CPU or memory per node too small")
        elif r is Reason.JURISDICTION:
            out.append(f"jurisdiction {site.jurisdiction} is not one of {', '.join(spec.allowed_jurisdictions)}")
        elif r is Reason.SITE_NOT_ALLOWED:
            out.append("site is not in allowed_sites")
        elif r is Reason.DEADLINE:
            finish = float(problem.finish_at[j, o])
            deadline = clock_text(float(problem.deadline_at[j]))
            out.append(
                f"would finish {clock_text(finish)} (transfer {problem.transfer_s[j, o] / 60:.0f} min + "
                f"run {problem.runtime_s[j, o] / 3600:.1f} h), after the deadline {deadline}"
            )
        elif r is Reason.LATENCY and spec.inference:
            slo = spec.inference.latency_slo_ms
            worst = max(spec.inference.user_regions, key=lambda u: site.rtt_ms.get(u, float("inf")))
            out.append(f"RTT to {worst} is {site.rtt_ms.get(worst, float('inf')):.0f} ms > SLO {slo:.0f} ms")
        elif r is Reason.MAX_COST:
            out.append(f"would cost ${problem.total_usd[j, o]:,.2f} > max ${spec.max_cost_usd:,.2f}")
        elif r is Reason.CAPACITY:
            out.append(capacity_text(problem, j, o))
        elif r is Reason.BUDGET:
            key = problem.budget_key[j]
            left = problem.budget_remaining_usd.get(key or "", 0.0)
            out.append(f"budget {key} has ${left:,.2f} left, needs ${problem.total_usd[j, o]:,.2f}")
        else:
            out.append(REASON_TEXT[r])
    return out


def capacity_text(problem: PlacementProblem, j: int, o: int) -> str:
    """Why a full option is out, with when it frees (from the release timeline) and what that means
    for the deadline: 'full until 14:20 UTC, would finish 19:05 UTC, after the deadline 18:00 UTC'."""
    pool_index = int(problem.options.pool[o])
    pool = problem.catalog.pools[pool_index]
    free = problem.capacity.free_milli(pool_index) / FULL
    if pool.elastic:
        return f"quota full now ({free:g} GPUs left)"
    timeline = problem.release
    frees_at = timeline.first_fit_at(problem.capacity, pool_index, problem.demands[j]) if timeline else None
    if frees_at is None:
        return f"full now ({free:g} GPUs free), no release in view"
    text = f"full until {clock_text(frees_at)}"
    deadline = float(problem.deadline_at[j])
    if np.isfinite(deadline):
        finish = frees_at + float(problem.transfer_s[j, o] + problem.runtime_s[j, o])
        if finish > deadline:
            text += f", would finish {clock_text(finish)}, after the deadline {clock_text(deadline)}"
        else:
            text += f", would still finish by the deadline ({clock_text(finish)})"
    return text


def explain(problem: PlacementProblem, j: int, chosen: int = -1, note: str = "") -> Explanation:
    """Every option for job j with its cost and reasons, against the chosen one (or none)."""
    total = problem.total_usd
    finish = problem.finish_at
    cat = problem.catalog
    cands: list[Candidate] = []
    for o in range(problem.n_options):
        pool = cat.pools[int(problem.options.pool[o])]
        bits = int(problem.reasons[j, o])
        cands.append(
            Candidate(
                option=o,
                site=pool.site,
                pool=pool.name,
                gpu_model=pool.gpu_model,
                spot=bool(problem.options.spot[o]),
                cost=CostBreakdown(
                    float(problem.compute_usd[j, o]), float(problem.egress_usd[j, o]), float(problem.storage_usd[j, o])
                ),
                transfer_s=float(problem.transfer_s[j, o]),
                runtime_s=float(problem.runtime_s[j, o]),
                finish_at=None if problem.specs[j].inference else float(finish[j, o]),
                free_gpus=problem.capacity.free_milli(int(problem.options.pool[o])) / FULL,
                feasible=bits == 0 or o == chosen,
                reasons=tuple(option_reasons(problem, j, o, bits)) if o != chosen else (),
                chosen=o == chosen,
                cost_delta_usd=float(total[j, o] - total[j, chosen]) if chosen >= 0 else 0.0,
                time_delta_s=float(finish[j, o] - finish[j, chosen]) if chosen >= 0 else 0.0,
            )
        )
    cands.sort(key=lambda c: (not c.chosen, not c.feasible, c.cost.total_usd, c.option))
    pick = cands[0] if cands and cands[0].chosen else None
    text = summary(problem, j, chosen)
    return Explanation(f"{note}. {text}" if note else text, tuple(cands), pick)


#: Rules that exclude a site for this job whatever it costs: stated once, grouped by reason.
POLICY = int(Reason.RESIDENCY | Reason.JURISDICTION | Reason.SITE_NOT_ALLOWED | Reason.LATENCY)
#: Hardware that simply does not match the request: listed per candidate, not in the summary.
MISMATCH = int(Reason.GPU_MODEL | Reason.NODE_SHAPE | Reason.DEDICATED | Reason.SPOT)


def summary(problem: PlacementProblem, j: int, chosen: int = -1) -> str:
    """One paragraph: the chosen option, then each cheaper option and what kept the job from it (with
    how much cheaper it was, and for a full pool when it frees against the deadline), then the sites
    a policy excludes. E.g. 'gcp-europe-west4/a3-high chosen ($99.87, finishes 09:27 UTC).
    onprem-fra/a100 ($87.30 cheaper): full until 11:00 UTC, would finish 13:00 UTC, after the deadline
    12:00 UTC. onprem-sjc, aws-us-east-1 excluded: dataset eu-support is eu-gdpr (must stay in EU)'."""
    parts: list[str] = []
    total = problem.total_usd
    if chosen >= 0:
        done = "" if problem.specs[j].inference else f", finishes {clock_text(float(problem.finish_at[j, chosen]))}"
        parts.append(f"{problem.option_label(chosen)} chosen (${total[j, chosen]:,.2f}{done})")
        cheaper = np.flatnonzero(total[j] < total[j, chosen] - 1e-9)
    else:
        cheaper = np.arange(problem.n_options)
    shown: set[str] = set()
    for o in cheaper[np.argsort(total[j, cheaper], kind="stable")].tolist():
        bits = int(problem.reasons[j, o])
        if bits & (POLICY | MISMATCH) or not bits:
            continue
        label = problem.option_label(o)
        if label in shown:
            continue
        shown.add(label)
        delta = f" (${total[j, chosen] - total[j, o]:,.2f} cheaper)" if chosen >= 0 else f" (${total[j, o]:,.2f})"
        parts.append(f"{label}{delta}: {'; '.join(option_reasons(problem, j, o, bits))}")
    # Policy exclusions are worth stating even where they would have cost more.
    excluded: dict[str, list[str]] = {}
    for o in range(problem.n_options):
        bits = int(problem.reasons[j, o]) & POLICY
        site = problem.catalog.pools[int(problem.options.pool[o])].site
        if bits:
            for text in option_reasons(problem, j, o, bits):
                if site not in excluded.setdefault(text, []):
                    excluded[text].append(site)
    for text, sites in excluded.items():
        parts.append(f"{', '.join(sites)} excluded: {text}")
    return ". ".join(parts) if parts else "no candidate sites"


# Reasons that describe an offer the job never asked for rather than a real alternative.
_NOISE = Reason.SPOT | Reason.DEDICATED


def rejection_text(problem: PlacementProblem, j: int) -> str:
    """Why no option can ever take job j, grouped by reason with the sites it excludes."""
    groups: dict[str, list[str]] = {}
    noise: dict[str, list[str]] = {}
    for o in range(problem.n_options):
        bits = int(problem.reasons[j, o]) & int(PERMANENT)
        site = problem.catalog.pools[int(problem.options.pool[o])].site
        for text in option_reasons(problem, j, o, bits & ~int(_NOISE)):
            sites = groups.setdefault(text, [])
            if site not in sites:
                sites.append(site)
        if bits and not bits & ~int(_NOISE):  # only ruled out as spot / dedicated
            for text in option_reasons(problem, j, o, bits):
                noise.setdefault(text, []).append(site)
    if not groups:
        groups = noise
    detail = "; ".join(f"{text} ({', '.join(sites)})" for text, sites in groups.items())
    return f"no site can ever run this job: {detail}"


def waiting_texts(problem: PlacementProblem, waiting: Mapping[int, tuple[int, str]]) -> dict[int, str]:
    """Why each waiting job (row -> (reason bits, placer note)) is still waiting.

    Jobs whose cheapest eligible option and blockers are the same share one text, so a backlog
    of thousands of identical jobs costs one explanation, not thousands."""
    rows = np.array(sorted(waiting), dtype=np.int64)
    out: dict[int, str] = {}
    if len(rows) == 0:
        return out
    ok = problem.static_ok()[rows]
    cost = np.where(ok, problem.total_usd[rows], np.inf)
    best = cost.argmin(axis=1)
    has = np.isfinite(cost[np.arange(len(rows)), best])
    cache: dict[tuple[int, int, int, int], str] = {}
    for k, j in enumerate(rows.tolist()):
        bits, note = waiting[j]
        if note:
            out[j] = note
            continue
        o = int(best[k]) if has[k] else -1
        blockers = int(problem.reasons[j, o]) & ~int(PERMANENT) if o >= 0 else 0
        key = (bits, o, blockers, round(float(cost[k, o]) * 100) if o >= 0 else 0)
        text = cache.get(key)
        if text is None:
            text = _waiting_text(problem, j, bits, o)
            cache[key] = text
        out[j] = text
    return out


def _waiting_text(problem: PlacementProblem, j: int, bits: int, o: int) -> str:
    why = [REASON_TEXT[r] for r in Reason if bits & r and not r.permanent] or ["no option available now"]
    best = ""
    if o >= 0:
        blockers = option_reasons(problem, j, o, int(problem.reasons[j, o]) & ~int(PERMANENT))
        blockers = blockers or ["its capacity went to higher-priority or earlier jobs this cycle"]
        best = f"; cheapest eligible {problem.option_label(o)} (${problem.total_usd[j, o]:,.2f}): " + "; ".join(
            blockers
        )
    return "waiting: " + ", ".join(why) + best
