"""The only list of placers. Add a policy: one module, one line here; the contract tests pick it up."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from placers.greedy import GreedyPlacer
from placers.joint import JointPlacer
from placers.result import Placer

PLACERS: Mapping[str, Callable[[], Placer]] = {
    "greedy": GreedyPlacer,
    "egress-blind": lambda: GreedyPlacer(egress_aware=False),
    "joint": JointPlacer,
}


def make_placer(name: str) -> Placer:
    try:
        return PLACERS[name]()
    except KeyError:
        raise ValueError(f"unknown placer {name!r}; known: {', '.join(sorted(PLACERS))}") from None
