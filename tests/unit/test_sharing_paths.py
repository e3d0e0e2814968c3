"""placers.sharing.transfers: the small-plan Python path and the numpy path give the same arrays."""

from __future__ import annotations

import numpy as np
import pytest

from placers import sharing
from placers.capacity import CapacityState
from placers.domain import Dataset
from placers.problem import build_problem
from tests.conftest import spec


@pytest.mark.parametrize("seed", range(6))
def test_small_and_numpy_paths_agree(catalog, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    sites = [s.name for s in catalog.sites]
    pool = [Dataset(f"d{i}", float(rng.uniform(1, 500)), (sites[int(rng.integers(len(sites)))],)) for i in range(6)]
    specs, datasets = [], []
    for j in range(int(rng.integers(2, 12))):
        mine = tuple(pool[i] for i in sorted(set(rng.integers(0, len(pool), size=int(rng.integers(0, 4))).tolist())))
        datasets.append(mine)
        specs.append(spec(name=f"j{j}", datasets=mine))
    problem = build_problem(
        catalog, specs, [f"j{j}" for j in range(len(specs))], datasets, CapacityState.empty(catalog), 1.8e9
    )
    assert len(problem.job_dataset[0]) > 0
    for _ in range(10):
        jobs = sorted(rng.choice(problem.n_jobs, size=int(rng.integers(0, problem.n_jobs + 1)), replace=False).tolist())
        options = [int(rng.integers(problem.n_options)) for _ in jobs]
        monkeypatch.setattr(sharing, "SMALL_PLAN", 10**9)
        small = sharing.transfers(problem, jobs, options)
        monkeypatch.setattr(sharing, "SMALL_PLAN", -1)
        vectorised = sharing.transfers(problem, jobs, options)
        for name in ("dataset", "site", "egress_usd", "storage_usd", "readers", "inc_job", "inc_transfer"):
            a, b = getattr(small, name), getattr(vectorised, name)
            assert a.shape == b.shape and np.array_equal(a, b), name
