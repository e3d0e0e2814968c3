"""Explanations: the chosen option against the alternatives, with cost and time deltas and release times."""

from __future__ import annotations

import pytest

from placers.explain import clock_text, explain
from placers.registry import make_placer
from placers.waiting import WaitRule
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.memory import MemoryStore
from tests.unit.test_waiting import FRA, HOUR, NOW, eu_job, fill_pool, problem_with

EU_DATA = ("eu-customer-support-2026",)


def test_full_on_prem_is_explained_with_its_release_time_against_the_deadline(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + 3 * HOUR] * 8)
    p = problem_with(catalog, [eu_job(deadline_at=NOW + 4 * HOUR, datasets=EU_DATA)], cap, alloc, WaitRule())
    d = make_placer("joint").place(p).decisions[0]
    assert d.placed
    ex = explain(p, 0, d.option, d.note)
    chosen = ex.chosen
    assert chosen is not None and catalog.site(chosen.site).jurisdiction == "EU"
    fra = p.catalog.pool_index[FRA]
    o = next(o for o in range(p.n_options) if int(p.options.pool[o]) == fra and not p.options.spot[o])
    saving = p.total_usd[0, d.option] - p.total_usd[0, o]
    assert saving > 0
    expected = (
        f"onprem-fra/a100 (${saving:,.2f} cheaper): full until {clock_text(NOW + 3 * HOUR)}, "
        f"would finish {clock_text(NOW + 5 * HOUR)}, after the deadline {clock_text(NOW + 4 * HOUR)}"
    )
    assert expected in ex.summary
    assert "aws-us-east-1" in ex.summary and "excluded: dataset eu-customer-support-2026 is eu-gdpr" in ex.summary
    # every candidate carries its deltas against the chosen option
    onprem = next(c for c in ex.candidates if c.site == "onprem-fra" and c.pool == "a100" and not c.spot)
    assert onprem.cost_delta_usd == pytest.approx(-saving)
    assert onprem.time_delta_s == pytest.approx(p.finish_at[0, o] - p.finish_at[0, d.option])
    assert not onprem.feasible and any("full until" in r for r in onprem.reasons)


def test_a_deferred_job_is_explained_by_its_wait(catalog, clock):
    store = MemoryStore(catalog)
    svc = SchedulerService(catalog, store, SimExecutor(clock, catalog), make_placer("joint"), clock, CycleSettings())
    from tests.conftest import spec

    svc.submit([spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=HOUR) for _ in range(8)])
    svc.run_cycle()
    ((job, _),) = svc.submit([eu_job(deadline_at=clock.now() + 4 * HOUR, datasets=EU_DATA)])
    svc.run_cycle()
    job, ex = svc.explain_job(job.id)
    assert ex.chosen is None
    assert ex.summary.startswith("waiting for onprem-fra/a100: full until")
    assert f"full until {clock_text(clock.now() + HOUR)}, would still finish by the deadline" in ex.summary


def test_no_release_in_view_is_said(catalog):
    cap, _ = fill_pool(catalog, FRA, [NOW + 3 * HOUR] * 8)
    p = problem_with(catalog, [eu_job(allowed_sites=("onprem-fra",))], cap, {}, WaitRule())
    ex = explain(p, 0, -1)
    assert "onprem-fra/a100" in ex.summary and "no release in view" in ex.summary
