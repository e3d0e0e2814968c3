"""CapacityState.find's short path for whole GPUs on one node binds exactly what the trial path does."""

from __future__ import annotations

import numpy as np
import pytest

from placers import capacity as cap_mod
from placers.capacity import FULL, CapacityState, Demand, NodeChoice


@pytest.mark.parametrize("choice", [NodeChoice.BEST_FIT, NodeChoice.WORST_FIT, NodeChoice.FIRST_FIT])
def test_short_path_matches_the_trial(catalog, choice, monkeypatch):
    rng = np.random.default_rng(7)
    pool = catalog.pool_index["onprem-sjc/h100"]
    state = CapacityState.empty(catalog)
    state.gpu_free[pool][:] = rng.choice([0, 250, FULL], size=state.gpu_free[pool].shape, p=[0.3, 0.1, 0.6])
    for gpus in range(1, 9):
        d = Demand(gpus=gpus, single_node=True)
        short = state.find(pool, d, choice)
        monkeypatch.setattr(cap_mod, "_CLASSIC", frozenset())
        trial = state.find(pool, d, choice)
        monkeypatch.setattr(
            cap_mod, "_CLASSIC", frozenset({NodeChoice.BEST_FIT, NodeChoice.WORST_FIT, NodeChoice.FIRST_FIT})
        )
        assert short == trial, gpus
