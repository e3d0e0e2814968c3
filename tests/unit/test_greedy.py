"""Greedy's shortcut for classes of alike jobs must not change a single decision."""

from __future__ import annotations

import numpy as np
import pytest

from placers import greedy
from placers.greedy import GreedyPlacer
from tests.contract.placement_cases import random_problem


def _decisions(problem):
    return GreedyPlacer().place(problem).decisions


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("waiting", [False, True])
def test_class_shortcut_decides_as_one_job_at_a_time(catalog, monkeypatch, seed, waiting):
    # 300 jobs on a tight catalog: many of them find every option full, so the shortcut runs.
    problem = random_problem(catalog, seed, n_jobs=300, waiting=waiting)
    fast = _decisions(problem)
    assert sum(d.option < 0 for d in fast) > 0, "instance too loose to exercise the shortcut"
    monkeypatch.setattr(greedy, "_classes", lambda kinds, n_ok, ranked: np.arange(len(kinds)))
    assert _decisions(problem) == fast
