"""What a placer returns: one decision per job of the problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from placers.domain import CostBreakdown, DataMove, NodeBinding, UnixSeconds
from placers.problem import PlacementProblem


@dataclass(frozen=True, slots=True)
class Decision:
    """Job `job` (a row of the problem) goes to option `option`, or waits (`option` -1) because of `reason`.

    `cost` and `data_moves` override the problem's per-job estimate when the placer shares a
    dataset transfer between jobs; `start_at` is later than `problem.now` when it plans a wait.
    """

    job: int
    option: int = -1
    bindings: tuple[NodeBinding, ...] = ()
    reason: int = 0  # Reason bits that kept the job from its better options (0 when placed at the best)
    note: str = ""
    cost: CostBreakdown | None = None
    data_moves: tuple[DataMove, ...] | None = None
    start_at: UnixSeconds | None = None
    retry_at: UnixSeconds | None = None  # for a job left waiting: decide again no later than this

    @property
    def placed(self) -> bool:
        return self.option >= 0


@dataclass(frozen=True)
class PlacementResult:
    placer: str
    decisions: Sequence[Decision]
    stats: Mapping[str, float] = field(default_factory=dict)
    # dataset id -> sites where this plan leaves a new cached copy
    new_replicas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def objective_usd(self, problem: PlacementProblem) -> float:
        total = 0.0
        for d in self.decisions:
            if d.placed:
                total += d.cost.total_usd if d.cost else float(problem.total_usd[d.job, d.option])
        return total


class Placer(Protocol):
    """Decides a whole batch. Pure: reads the problem, mutates nothing, same input -> same result."""

    name: str

    def place(self, problem: PlacementProblem) -> PlacementResult: ...
