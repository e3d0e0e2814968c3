"""Greedy placement: each job in turn takes its cheapest feasible option, egress included.

Order: priority tier (high first), then earliest deadline, then submission order. A job that
cannot go anywhere now waits with the reasons that blocked its options; a job whose cheaper option
is full may wait for it under the waiting rule (placers.waiting). This is the baseline every
smarter placer is scored against, on the same numbers. The choice ignores that jobs could share a
dataset copy; the result is still priced with shared transfers (placers.sharing), so every placer's
bill is the true one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from placers.problem import PERMANENT, PlacementProblem, Reason
from placers.result import Decision, PlacementResult
from placers.sharing import attribute
from placers.waiting import WaitPlanner


def job_order(problem: PlacementProblem) -> npt.NDArray[np.int64]:
    """Priority desc, deadline asc, then batch order: the order every sequential placer follows."""
    idx = np.arange(problem.n_jobs)
    return np.lexsort((idx, problem.deadline_at, -problem.priority))


def demand_kinds(problem: PlacementProblem) -> npt.NDArray[np.int64]:
    """A small integer per distinct demand shape, so per-shape facts can live in arrays."""
    ids: dict[object, int] = {}
    return np.array([ids.setdefault(d, len(ids)) for d in problem.demands], dtype=np.int64)


def waiting_reason(problem: PlacementProblem, j: int, blocked: int) -> int:
    """The reason bits a job that got no option carries: what blocked it, else its transient bits."""
    row = problem.reasons[j]
    if not len(row):
        return blocked or int(Reason.CAPACITY)
    every = int(np.bitwise_or.reduce(row))
    # what blocked it, else what may clear, else the rules every option breaks, else all that applies
    return blocked or (every & ~int(PERMANENT)) or int(np.bitwise_and.reduce(row)) or every


class GreedyPlacer:
    name = "greedy"

    def __init__(self, *, egress_aware: bool = True) -> None:
        self.egress_aware = egress_aware
        if not egress_aware:
            self.name = "egress-blind"

    def place(self, problem: PlacementProblem) -> PlacementResult:
        capacity = problem.capacity.copy()
        budgets = dict(problem.budget_remaining_usd)
        total = problem.total_usd
        score = total if self.egress_aware else problem.compute_usd
        unavailable = (problem.reasons & int(Reason.SITE_UNAVAILABLE)) != 0
        ok = problem.static_ok() & ~unavailable
        finish = problem.transfer_s + problem.runtime_s
        # Per row: feasible options cheapest first, ties by earlier finish, then option index.
        masked = np.where(ok, score, np.inf)
        ranked = np.lexsort((np.broadcast_to(np.arange(problem.n_options), masked.shape), finish, masked), axis=1)
        n_ok = ok.sum(axis=1)
        kinds = demand_kinds(problem)
        # Capacity only shrinks during a pass: a demand shape that did not fit a pool never will.
        no_room = np.zeros((int(kinds.max()) + 1 if len(kinds) else 0, len(problem.catalog.pools)), dtype=bool)
        opt_pool = problem.options.pool
        planner = WaitPlanner(problem, score)
        decisions: list[Decision] = []
        # Jobs with the same reasons row wait for the same reasons: one answer per (row, blocked).
        why_waiting: dict[tuple[int, int], int] = {}
        rows = _row_classes(problem.reasons)
        # Jobs of one shape with the same ranked options are alike: once one found every option full,
        # the rest of its class (without a budget to check) waits for the same reason at once.
        classes = _classes(kinds, n_ok, ranked)
        full_class: set[int] = set()
        for row in job_order(problem):
            j = int(row)
            key = problem.budget_key[j]
            if key is None and classes[j] in full_class:
                decisions.append(Decision(job=j, reason=self._why(why_waiting, rows, problem, j, int(Reason.CAPACITY))))
                continue
            demand = problem.demands[j]
            cands = ranked[j, : n_ok[j]]
            open_ = ~no_room[kinds[j], opt_pool[cands]]
            blocked = int(Reason.CAPACITY) if not open_.all() else 0
            if key is None and len(cands) and not open_.any():
                full_class.add(int(classes[j]))
            if key is not None:
                affordable = total[j, cands] <= budgets[key] + 1e-9
                if not affordable.all():
                    blocked |= int(Reason.BUDGET)
                open_ &= affordable
            chosen: Decision | None = None
            for col in cands[open_]:
                o = int(col)
                pool = int(opt_pool[o])
                bindings = capacity.find(pool, demand)
                if bindings is None:
                    no_room[kinds[j], pool] = True
                    blocked |= int(Reason.CAPACITY)
                    continue
                if planner.active and blocked & int(Reason.CAPACITY):
                    chosen = planner.consider(j, o, capacity)
                    if chosen is not None:
                        break
                capacity.take(pool, demand, bindings)
                planner.note_taken(pool, demand, bindings)
                if key is not None:
                    budgets[key] -= float(total[j, o])
                chosen = Decision(job=j, option=o, bindings=bindings, reason=blocked)
                break
            decisions.append(chosen or Decision(job=j, reason=self._why(why_waiting, rows, problem, j, blocked)))
        decisions.sort(key=lambda d: d.job)
        priced, new_replicas = attribute(problem, decisions)
        return PlacementResult(self.name, priced, {"deferred": float(planner.deferred)}, new_replicas)

    @staticmethod
    def _why(
        memo: dict[tuple[int, int], int], rows: npt.NDArray[np.int64], problem: PlacementProblem, j: int, blocked: int
    ) -> int:
        key = (int(rows[j]), blocked)
        bits = memo.get(key)
        if bits is None:
            bits = memo[key] = waiting_reason(problem, j, blocked)
        return bits


def _row_classes(table: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """An id per row of `table`, equal for equal rows."""
    if table.shape[0] == 0 or table.shape[1] == 0:
        return np.zeros(table.shape[0], dtype=np.int64)
    # Each row as one opaque value (np.unique with axis=0 costs ~0.3 ms a call in dtype set-up alone).
    rows = np.ascontiguousarray(table)
    opaque = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    inverse: npt.NDArray[np.int64] = np.unique(opaque, return_inverse=True)[1]
    return inverse.reshape(-1).astype(np.int64)


def _classes(
    kinds: npt.NDArray[np.int64], n_ok: npt.NDArray[np.int64], ranked: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """A class id per job: same demand shape, same number of feasible options, same ranking."""
    if len(kinds) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.ascontiguousarray(
        np.column_stack([kinds, n_ok, np.where(np.arange(ranked.shape[1]) < n_ok[:, None], ranked, -1)])
    )
    ids: dict[bytes, int] = {}
    return np.array([ids.setdefault(r.tobytes(), len(ids)) for r in rows], dtype=np.int64)
