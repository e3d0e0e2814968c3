"""A proven lower bound on the total USD of any plan that places a given set of jobs.

Used by the placement benchmark to state how far a plan is from optimal, and by tests.

The bound is the Lagrangian dual of the LP relaxation of the joint problem (placers/joint.py):

    minimise   sum_j sum_o x_jo compute_jo  +  sum_(d,s) y_ds F_ds
    subject to sum_o x_jo = 1 for every job j of the set (usable options only),
               GPU units per pool <= free, per site <= burst quota free,
               x_j,o <= y_d,s(o) for every dataset d job j reads   (a copy exists where it is read)
               x, y >= 0.

Node shapes, gangs and budgets are relaxed (dropping constraints only lowers the optimum). For any
prices pi_p, sigma_s >= 0 on pools and sites, and any split of each copy's price among its
readers, w_jds >= 0 with sum_j w_jds <= 1 for each (d, s), weak duality gives

    LB = sum_j min_o [compute_jo + sum_d w_jds(o) F_ds(o) + g_j (pi_p(o) + sigma_s(o))]
         - sum_p pi_p cap_p - sum_s sigma_s quota_s   <=   cost of every plan placing the set.

Prices are found by exact coordinate ascent (each price set to the level that balances its
pool's demand with its capacity, a few sweeps); the split w is the better of two valid choices:
equal shares among all readers of the set, and the shares of a reference plan (readers of each
copy in that plan share it; datasets it does not copy to a site share that site equally). The
bound is valid whatever prices and split are used; better choices only make it tighter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from placers.capacity import FULL
from placers.problem import PlacementProblem, Reason

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Bound:
    lower_usd: float
    sweeps: int
    split: str  # which split of shared copies gave the bound


def lower_bound(
    problem: PlacementProblem, jobs: Sequence[int], reference: Sequence[int] | None = None, sweeps: int = 6
) -> Bound:
    """A lower bound on the cost of any plan placing every job in `jobs`.

    `reference` (option per job of the problem, -1 unplaced), when given, offers a second split of
    shared copies, usually tighter around that plan."""
    rows = np.asarray(sorted({int(j) for j in jobs}), dtype=np.int64)
    if len(rows) == 0:
        return Bound(0.0, 0, "none")
    not_now = int(Reason.SITE_UNAVAILABLE | Reason.CAPACITY | Reason.BUDGET)
    usable = problem.static_ok()[rows] & ((problem.reasons[rows] & not_now) == 0)
    if not usable.any(axis=1).all():
        raise ValueError("jobs: some job has no usable option, no plan can place the set")
    best = Bound(-np.inf, 0, "none")
    for name, data in _splits(problem, rows, reference):
        cost = problem.compute_usd[rows] + data[:, problem.options.site]
        cost[~usable] = np.inf
        value, n, pi, sigma = _dual(problem, rows, cost, sweeps)
        if value > best.lower_usd:
            best = Bound(value, n, name)
        value = _facility(problem, rows, usable, pi, sigma)
        if value > best.lower_usd:
            best = Bound(value, n, f"{name} prices, copies by dual ascent")
    return best


def _splits(problem: PlacementProblem, rows: I64, reference: Sequence[int] | None) -> list[tuple[str, F64]]:
    n_sites = len(problem.catalog.sites)
    fixed = problem.dataset_egress_usd + problem.dataset_storage_usd
    if fixed.size:
        fixed = np.where(problem.dataset_source == np.arange(n_sites)[None, :], 0.0, fixed)
    inc_job, inc_ds = (a.astype(np.int64) for a in problem.job_dataset)
    local = np.full(problem.n_jobs, -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    keep = local[inc_job] >= 0
    r, d = local[inc_job[keep]], inc_ds[keep]
    n_ds = fixed.shape[0]
    readers = np.bincount(d, minlength=n_ds).astype(np.float64)
    equal = np.zeros((len(rows), n_sites))
    if len(r):
        np.add.at(equal, r, fixed[d] / readers[d, None])
    out = [("equal shares", equal)]
    if reference is not None and len(r):
        ref = np.asarray(reference, dtype=np.int64)
        site = np.where(ref[rows[r]] >= 0, problem.options.site[np.maximum(ref[rows[r]], 0)], -1)
        at = np.zeros((n_ds, n_sites))
        placed = site >= 0
        np.add.at(at, (d[placed], site[placed]), 1.0)
        # weight of reader (row) for (d, s): 1/at[d,s] if it sits at s; 0 if others sit at s; 1/readers if none does
        w = np.where(at[d] > 0, 0.0, 1.0 / readers[d, None])
        w[placed, site[placed]] = 1.0 / at[d[placed], site[placed]]
        plan = np.zeros((len(rows), n_sites))
        np.add.at(plan, r, w * fixed[d])
        out.append(("reference plan shares", plan))
    return out


def _dual(problem: PlacementProblem, rows: I64, cost: F64, sweeps: int) -> tuple[float, int, F64, F64]:
    cat = problem.catalog
    opts = problem.options
    n_pools, n_sites = len(cat.pools), len(cat.sites)
    g = np.array([problem.demands[j].total_milli / FULL for j in rows.tolist()])
    cap = {
        "pool": np.array([problem.capacity.free_milli(p) / FULL for p in range(n_pools)]),
        "site": np.array(
            [
                problem.capacity.site_quota_free[s] / FULL if cat.sites[s].burst_quota_gpus is not None else np.inf
                for s in range(n_sites)
            ]
        ),
    }
    price = {"pool": _flow_prices(problem, cost, g, cap["pool"], cap["site"]), "site": np.zeros(n_sites)}
    group = {"pool": opts.pool.astype(np.int64), "site": opts.site.astype(np.int64)}
    base = cost + g[:, None] * price["pool"][opts.pool][None, :]  # cost plus the current prices, [jobs, options]
    done = 0
    for _ in range(sweeps):
        done += 1
        changed = False
        for level in ("pool", "site"):
            cols = group[level]
            starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
            ids = cols[starts]  # options are grouped by pool, pools by site: contiguous ranges
            gm = np.minimum.reduceat(base, starts, axis=1)  # [jobs, groups]
            demand = np.bincount(gm.argmin(axis=1), weights=g, minlength=len(ids))
            caps, prices = cap[level][ids], price[level][ids]
            active = np.flatnonzero(np.isfinite(caps) & ((demand > caps + 1e-9) | (prices > 0)))
            if len(active) == 0:
                continue
            for k in active.tolist():
                if gm.shape[1] > 1:
                    two = np.partition(gm, 1, axis=1)[:, :2]
                    first = gm.argmin(axis=1)
                    best_out = np.where(first == k, two[:, 1], two[:, 0])
                else:
                    best_out = np.full(len(g), np.inf)
                own = float(price[level][ids[k]])
                best_in = gm[:, k] - g * own
                new = _balance(best_in, best_out, g, float(caps[k]))
                delta = new - own
                if abs(delta) <= 1e-12 * max(1.0, abs(own)):
                    continue
                changed = True
                price[level][ids[k]] = new
                gm[:, k] += g * delta
                lo = starts[k]
                hi = starts[k + 1] if k + 1 < len(starts) else base.shape[1]
                base[:, lo:hi] += g[:, None] * delta
        if not changed:
            break
    finite_quota = np.where(np.isfinite(cap["site"]), cap["site"], 0.0)
    value = float(base.min(axis=1).sum() - (price["pool"] * cap["pool"]).sum() - (price["site"] * finite_quota).sum())
    return value, done, price["pool"], price["site"]


def _flow_prices(problem: PlacementProblem, cost: F64, g: F64, cap_pool: F64, cap_site: F64) -> F64:
    """Starting pool prices from an (approximately) optimal primal: a min-cost flow of the same LP.

    By complementary slackness, in an optimal solution a job sits on its cheapest pool at the
    prices, and a pool with room has price 0. Moving one GPU of a job from pool p to pool q costs
    w_pq = min over the jobs on p of (cost at q - cost at p) per GPU; the largest prices with
    price_p - price_q <= w_pq and 0 on pools with room are shortest distances to the pools with
    room (Bellman-Ford on the pools). Any prices >= 0 give a valid bound; these start the ascent
    close to the LP optimum, which coordinate ascent alone reaches slowly."""
    from ortools.graph.python import min_cost_flow

    opts = problem.options
    cat = problem.catalog
    n_pools = len(cat.pools)
    cols = opts.pool.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    pool_cost = np.full((len(g), n_pools), np.inf)
    pool_cost[:, cols[starts]] = np.minimum.reduceat(cost, starts, axis=1)
    units = np.maximum(1, np.ceil(g)).astype(np.int64)
    k = min(n_pools, 24)
    cand = np.argpartition(pool_cost, k - 1, axis=1)[:, :k] if k < n_pools else np.tile(np.arange(n_pools), (len(g), 1))
    cc = np.take_along_axis(pool_cost, cand, axis=1)
    rows, cidx = np.nonzero(np.isfinite(cc))
    n = len(g)
    pool_site = np.array([cat.site_index[p.site] for p in cat.pools], dtype=np.int64)
    sink = n + n_pools + len(cat.sites)
    unit_cost = np.rint(cc[rows, cidx] / units[rows] * 1e6).astype(np.int64)  # micro-dollars per GPU
    big = int(unit_cost.max(initial=0)) * 4 + 1
    site_cap = np.where(np.isfinite(cap_site), np.floor(cap_site), 10**12).astype(np.int64)
    flow = min_cost_flow.SimpleMinCostFlow()
    tails = np.concatenate([rows, np.arange(n), n + np.arange(n_pools), n + n_pools + np.arange(len(cat.sites))])
    heads = np.concatenate(
        [n + cand[rows, cidx], np.full(n, sink), n + n_pools + pool_site, np.full(len(cat.sites), sink)]
    )
    caps = np.concatenate([units[rows], units, np.floor(cap_pool).astype(np.int64), site_cap])
    costs = np.concatenate([unit_cost, np.full(n, big), np.zeros(n_pools + len(cat.sites), dtype=np.int64)])
    arcs = flow.add_arcs_with_capacity_and_unit_cost(
        tails.astype(np.int32), heads.astype(np.int32), caps.astype(np.int64), costs.astype(np.int64)
    )
    supply = np.zeros(sink + 1, dtype=np.int64)
    supply[:n] = units
    supply[sink] = -int(units.sum())
    flow.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supply)
    if flow.solve() != flow.OPTIMAL:
        return np.zeros(n_pools)
    sent = np.zeros(cc.shape, dtype=np.int64)
    sent[rows, cidx] = flow.flows(arcs[: len(rows)])
    on = cand[np.arange(n), sent.argmax(axis=1)]
    placed = sent.max(axis=1) > 0
    load = np.bincount(on[placed], weights=g[placed], minlength=n_pools)
    site_load = np.bincount(pool_site[on[placed]], weights=g[placed], minlength=len(cat.sites))
    full = (load >= cap_pool - 1.0) | (site_load >= cap_site - 1.0)[pool_site]
    per_gpu = pool_cost / g[:, None]
    here = per_gpu[np.arange(n), on]
    w = np.full((n_pools, n_pools), np.inf)
    for p in np.unique(on[placed]).tolist():
        mine = placed & (on == p)
        w[p] = (per_gpu[mine] - here[mine, None]).min(axis=0)
    price = np.where(full, np.inf, 0.0)
    for _ in range(n_pools):
        new = np.minimum(price, (w + price[None, :]).min(axis=1))
        new = np.where(full, new, 0.0)
        if np.allclose(new, price, equal_nan=False):
            break
        price = new
    price = np.where(np.isfinite(price), np.maximum(price, 0.0), 0.0)
    return price


def _capacities(problem: PlacementProblem) -> tuple[F64, F64]:
    cat = problem.catalog
    pools = np.array([problem.capacity.free_milli(p) / FULL for p in range(len(cat.pools))])
    quota = np.array(
        [
            problem.capacity.site_quota_free[s] / FULL if site.burst_quota_gpus is not None else 0.0
            for s, site in enumerate(cat.sites)
        ]
    )
    return pools, quota


def _facility(problem: PlacementProblem, rows: I64, usable: npt.NDArray[np.bool_], pi: F64, sigma: F64) -> float:
    """The Lagrangian bound at prices (pi, sigma) with each dataset's copies priced by an
    uncapacitated-facility-location dual ascent (Erlenkotter's DUALOC, all readers at once).

    A job's first dataset is its facility problem; any further dataset it reads is charged an
    equal share, and that share is taken out of the copy's budget for the first readers."""
    cat = problem.catalog
    n_sites = len(cat.sites)
    opts = problem.options
    g = np.array([problem.demands[j].total_milli / FULL for j in rows.tolist()])
    fixed = problem.dataset_egress_usd + problem.dataset_storage_usd
    n_ds = fixed.shape[0]
    if n_ds:
        fixed = np.where(problem.dataset_source == np.arange(n_sites)[None, :], 0.0, fixed)
    local = np.full(problem.n_jobs, -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    inc_job, inc_ds = (a.astype(np.int64) for a in problem.job_dataset)
    keep = local[inc_job] >= 0
    r, d = local[inc_job[keep]], inc_ds[keep]
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:] != r[:-1]
    primary = np.full(len(rows), -1, dtype=np.int64)
    primary[r[first]] = d[first]
    readers = np.bincount(d, minlength=n_ds).astype(np.float64)
    secondary = np.bincount(d[~first], minlength=n_ds).astype(np.float64)
    second_cost = np.zeros((len(rows), n_sites))
    if (~first).any():
        np.add.at(second_cost, r[~first], fixed[d[~first]] / readers[d[~first], None])
    budget = fixed * ((readers - secondary) / np.maximum(readers, 1.0))[:, None]

    base = (
        problem.compute_usd[rows] + second_cost[:, opts.site] + g[:, None] * (pi[opts.pool] + sigma[opts.site])[None, :]
    )
    base[~usable] = np.inf
    cols = opts.site.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    c = np.full((len(rows), n_sites), np.inf)
    c[:, cols[starts]] = np.minimum.reduceat(base, starts, axis=1)  # [jobs, sites]
    v = c.min(axis=1)
    mine = np.flatnonzero(primary >= 0)
    if len(mine):
        cm, dm = c[mine], primary[mine]
        vm = v[mine].copy()
        for _ in range(200):
            contrib = cm <= vm[:, None] + 1e-9
            used = np.zeros((n_ds, n_sites))
            np.add.at(used, dm, np.where(contrib, vm[:, None] - cm, 0.0))
            count = np.zeros((n_ds, n_sites))
            np.add.at(count, dm, contrib.astype(np.float64))
            share = np.maximum(budget - used, 0.0) / np.maximum(count, 1.0)
            room = np.where(contrib, share[dm], np.inf).min(axis=1)
            nxt = np.where(cm > vm[:, None] + 1e-9, cm, np.inf).min(axis=1)
            step = np.minimum(nxt - vm, room)
            step = np.where(np.isfinite(step), step, 0.0)
            if step.max(initial=0.0) <= 1e-9 * max(1.0, float(np.abs(vm).max(initial=0.0))):
                break
            vm += step
        v[mine] = vm
    pools, quota = _capacities(problem)
    return float(v.sum() - (pi * pools).sum() - (sigma * quota).sum())


def _balance(best_in: F64, best_out: F64, g: F64, cap: float) -> float:
    """The price >= 0 maximising sum_j min(best_in_j + g_j t, best_out_j) - t cap."""
    reach = np.isfinite(best_in)
    if not reach.any():
        return 0.0
    t = np.where(np.isfinite(best_out[reach]), (best_out[reach] - best_in[reach]) / g[reach], np.inf)
    w = g[reach]
    order = np.argsort(-t, kind="stable")
    t, w = t[order], w[order]
    # derivative at price x: sum of g_j with t_j > x, minus cap; the optimum is where it turns <= 0
    cum = np.cumsum(w)
    k = int(np.searchsorted(cum, cap, side="right"))  # first index where cumulative demand exceeds cap
    if k >= len(t):
        return 0.0
    price = float(t[k])
    return max(0.0, price) if np.isfinite(price) else 0.0
