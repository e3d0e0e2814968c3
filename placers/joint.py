"""Joint placement: a whole pending batch decided at once, minimising the batch's total USD.

Objective
---------
Total USD = compute + egress + storage of the cached replicas the plan creates, where a dataset
copied to a site is paid ONCE however many jobs of the plan read it there (placers/sharing.py:
one transfer per (dataset, site), attributed to its readers in equal shares). All numbers come
from the `PlacementProblem` (compute per job x option, egress and storage per dataset x site);
nothing is re-priced here.

Rules, and how each is kept
---------------------------
* Residency, jurisdiction, allowed sites, GPU model, node shape, deadline, latency SLO, maximum
  cost, spot and dedicated-hardware rules: options with any permanent reason bit are never
  candidates (the problem's `reasons`). Options whose site is unavailable, whose pool cannot take
  the job alone now (CAPACITY) or that exceed the job's budget alone (BUDGET) are not either.
* Capacity per pool, node, GPU model, gang (single-node) jobs, cloud pool quotas and site burst
  quotas: the solver works on GPU counts; every placement is then BOUND to concrete nodes and GPU
  slots through `CapacityState` (repair step). A job that does not bind goes to its next best
  option that does, so the output never exceeds capacity by construction.
* Cost-center budgets: checked when binding, in priority order, against the job's stand-alone
  cost (its share of a shared transfer is never more), so a budget is never overdrawn.
* Priority: LEXICOGRAPHIC on who is placed, JOINT on where. A higher tier is never displaced: the
  repair binds tier by tier (highest first, each tier's leftovers retried before the next tier
  binds), and a final eviction repair gives an unplaced job the capacity that lower-tier jobs hold
  in a pool it could use (they move elsewhere or wait). Inside the flow the tiers are weighted: a
  GPU left unplaced costs more than any option, x4 per tier above the lowest (and up to x2 for
  urgency: earlier deadline, earlier submission), so under scarcity the flow itself prefers the
  higher tier. Where every job fits, tiers do not buy the cheapest GPUs: USD is minimised over the
  whole batch (solving tiers one after another instead cost 15-25% more on 1k-job benchmark
  instances, the cheap on-prem GPUs going to short high-tier jobs instead of long low-tier ones).
  The contract tests check the guarantee for every placer.
* Waiting: after the plan, every placed job whose cheaper option is full asks the waiting rule
  (placers/waiting.py); a job that should wait gives its capacity back and is left DEFERRED with a
  retry time, and the freed capacity is offered to the jobs still unplaced (priority order).

Algorithm
---------
1. Candidates: each job's usable options reduced to one per pool (on-demand or spot, whichever is
   cheaper for it). Arcs: its `plain_candidates` cheapest pools with room, plus up to
   `max_candidates` "scarce" pools cheaper than those. A pool is scarce when a flow filled it;
   before the first flow a cascade estimate (every job's cheapest pool, then its next one where that
   is over-asked) seeds the set. A pool with room has LP price 0, so a dearer scarce pool could
   never be chosen: the pruning loses little.
2. Data gravity by slope scaling (Kim & Pardalos): a copy's fixed price is spread over the jobs
   expected to share it (first all readers of the dataset in the batch, then the readers the
   previous round actually sent there, a lone reader paying it all), up to `rounds` rounds while
   they gain 0.1%. Then `add_rounds` rounds with the best plan's copies fixed (paid once, free to
   every reader) and the copies whose readers would save more compute than they cost opened
   (ADD/DROP for facility location). The cheapest round by true shared cost wins. Live replicas
   cost nothing.
3. Each round is an OR-Tools min-cost flow in GPU units: job -> pool -> site -> sink, pool capacity
   = free GPUs, site capacity = burst quota, plus an "unplaced" arc per job. Its LP relaxation is
   exact; a job split between pools takes the pool that got most of it. Batches above `part_jobs`
   are partitioned (POP, Narayanan et al. SOSP'21): jobs grouped by dataset so shared copies stay
   in one part, each part solved on its share of every pool; jobs a part could not place get one
   more flow over the pools still with room.
4. Repair: bind tier by tier (largest gangs first); a job that does not bind takes its next best
   option that does. 5. Fill: unplaced jobs take their cheapest option that binds.
6. Improve: move single jobs to a cheaper option that binds now, and close a copy when moving all
   its readers elsewhere is cheaper (the per-dataset "move data or move compute" decision).
7. Eviction repair for priority, the waiting rule, a last fill.
Money in the flow is integer micro-dollars per GPU (`to_micro`, coarser only if a batch's worst
total would overflow int64). A time limit stops rounds at 60% of it and improvement at 85%; what
is bound by then is the plan returned (stats["timed_out"]). Same input and seed give the same plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow

from placers.capacity import FULL, CapacityState
from placers.domain import NodeBinding
from placers.greedy import demand_kinds, job_order, waiting_reason
from placers.problem import PlacementProblem, Reason
from placers.result import Decision, PlacementResult
from placers.sharing import attribute
from placers.waiting import WaitPlanner

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

MICRO_USD = 1_000_000  # the solver's money unit: integer micro-dollars (the one conversion)


def to_micro(usd: F64) -> I64:
    return np.rint(usd * MICRO_USD).astype(np.int64)


@dataclass(frozen=True, slots=True)
class JointSettings:
    plain_candidates: int = 3  # cheapest pools with room per job given to the flow
    max_candidates: int = 16  # cheapest filled-up (scarce) pools per job given to the flow, when cheaper
    estimate_rounds: int = 2  # cascade rounds of the first guess at the scarce pools
    part_jobs: int = 8_000  # batches above this are partitioned (POP)
    rounds: int = 3  # slope-scaling rounds for shared transfers (fewer when they stop gaining)
    add_rounds: int = 1  # then rounds with the best plan's copies fixed, opening the most promising new ones
    improve_passes: int = 2
    time_limit_s: float = 10.0
    seed: int = 0


class JointPlacer:
    name = "joint"

    def __init__(self, settings: JointSettings | None = None) -> None:
        self.settings = settings or JointSettings()

    def place(self, problem: PlacementProblem) -> PlacementResult:
        started = time.perf_counter()
        state = _State(problem, self.settings, started)
        stats: dict[str, float] = {"tiers": 0.0, "flow_s": 0.0, "parts": 0.0, "rounds": 0.0}
        order = job_order(problem)
        rank = np.empty(problem.n_jobs, dtype=np.int64)
        rank[order] = np.arange(problem.n_jobs)
        jobs = order[state.usable[order].any(axis=1)]
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            stats[name] = stats.get(name, 0.0) + now - clock
            clock = now

        if len(jobs):
            targets = state.solve(jobs, rank, stats)
            lap("solve_s")
            # 4. repair and 5. fill, tier by tier: a tier binds before any lower tier takes anything
            tiers = problem.priority[jobs]
            for tier in sorted({int(t) for t in tiers}, reverse=True):
                stats["tiers"] += 1
                mine = tiers == tier
                state.bind(jobs[mine], targets[mine])
                state.fill(jobs[mine])
            lap("bind_s")
            # 6. improve
            for _ in range(self.settings.improve_passes):
                if state.out_of_time(0.85) or not state.improve(jobs):
                    break
            state.fill(order)
            state.protect_priority(order)
            lap("improve_s")
        deferred = state.wait(order)
        state.fill(order)
        state.protect_priority(order)
        lap("wait_s")
        decisions = state.decisions(deferred)
        priced, new_replicas = attribute(problem, decisions)
        lap("output_s")
        stats["deferred"] = float(len(deferred))
        stats["placed"] = float(sum(d.placed for d in decisions))
        stats["total_s"] = time.perf_counter() - started
        stats["timed_out"] = float(state.timed_out or state.out_of_time())
        return PlacementResult(self.name, priced, stats, new_replicas)


class _State:
    """The plan being built: live capacity, budgets, chosen options and the transfers they open."""

    def __init__(self, problem: PlacementProblem, settings: JointSettings, started: float) -> None:
        self.p = problem
        self.s = settings
        self.started = started
        self.timed_out = False
        n_jobs = problem.n_jobs
        opts = problem.options
        self.opt_site = opts.site.astype(np.int64)
        self.opt_pool = opts.pool.astype(np.int64)
        self.n_sites = len(problem.catalog.sites)
        self.n_pools = len(problem.catalog.pools)
        not_now = int(Reason.SITE_UNAVAILABLE | Reason.CAPACITY | Reason.BUDGET)
        self.usable: B = problem.static_ok() & ((problem.reasons & not_now) == 0)
        self.compute: F64 = problem.compute_usd
        self.total: F64 = problem.total_usd
        self.capacity: CapacityState = problem.capacity.copy()
        self.budgets = dict(problem.budget_remaining_usd)
        self.option = np.full(n_jobs, -1, dtype=np.int64)
        self.bindings: list[tuple[NodeBinding, ...]] = [() for _ in range(n_jobs)]
        self.blocked = np.zeros(n_jobs, dtype=np.int64)
        # data: fixed price of one copy per (dataset, site); 0 where a replica is live
        self.fixed: F64 = problem.dataset_egress_usd + problem.dataset_storage_usd
        n_ds = self.fixed.shape[0]
        self.local: B = (
            problem.dataset_source == np.arange(self.n_sites)[None, :] if n_ds else np.zeros((0, self.n_sites), bool)
        )
        self.fixed = np.where(self.local, 0.0, self.fixed)
        self.readers = np.zeros((n_ds, self.n_sites), dtype=np.int64)  # placed jobs reading d at s
        inc_job, inc_ds = (a.astype(np.int64) for a in problem.job_dataset)
        self.inc_job, self.inc_ds = inc_job, inc_ds
        self.ds_of: list[list[int]] = [[] for _ in range(n_jobs)]
        self.jobs_of: list[list[int]] = [[] for _ in range(self.fixed.shape[0])]
        for j, d in zip(inc_job.tolist(), inc_ds.tolist(), strict=True):
            self.ds_of[j].append(d)
            self.jobs_of[d].append(j)
        self.units = np.array([max(1, math.ceil(d.total_milli / FULL)) for d in problem.demands], dtype=np.int64)
        self.kinds = demand_kinds(problem)
        self.gang = np.array([d.gpus if d.single_node else 0 for d in problem.demands], dtype=np.int64)
        self._no_room: dict[tuple[int, int], bool] = {}
        # aggregate free milli-GPUs per pool and per site quota: a cheap necessary check before binding
        self.milli = np.array([d.total_milli for d in problem.demands], dtype=np.int64)
        self.elastic = opts.elastic.astype(bool)
        cap = self.capacity
        self.free_pool = np.array(
            [
                cap.elastic_free[i] if pl.elastic else int(cap.gpu_free[i].sum())
                for i, pl in enumerate(problem.catalog.pools)
            ],
            dtype=np.int64,
        )
        self.free_site = cap.site_quota_free.copy()
        self.deferred_mark = np.zeros(n_jobs, dtype=bool)
        self.scarce = np.zeros(self.n_pools, dtype=bool)  # pools a flow has filled: offered to every job
        self.discovered = False
        tiers = np.unique(problem.priority)
        self.tier = np.searchsorted(tiers, problem.priority).astype(np.int64)  # 0 = lowest tier present

    def out_of_time(self, share: float = 1.0) -> bool:
        """Past `share` of the time limit (solving stops at 60%, improving at 85%: binding and output
        need the rest). Once true, the plan is reported as cut short."""
        late = time.perf_counter() > self.started + share * self.s.time_limit_s
        self.timed_out |= late
        return late

    # ------------------------------------------------------------------ costs

    def data_cost(self, jobs: I64, per_ds_site: F64) -> F64:
        """[len(jobs), sites]: the sum over each job's datasets of `per_ds_site[d, s]`."""
        out = np.zeros((len(jobs), self.n_sites))
        if len(self.inc_job) == 0 or len(jobs) == 0:
            return out
        local = np.full(self.p.n_jobs, -1, dtype=np.int64)
        local[jobs] = np.arange(len(jobs))
        rows = local[self.inc_job]
        keep = rows >= 0
        rows, ds = rows[keep], self.inc_ds[keep]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        out[rows[first]] = per_ds_site[ds[first]]
        if not first.all():
            np.add.at(out, rows[~first], per_ds_site[ds[~first]])
        return out

    def marginal_row(self, j: int) -> F64:
        """[options]: job j's cost on each option given the transfers the plan already makes."""
        data = np.zeros(self.n_sites)
        for d in self.ds_of[j]:
            data += np.where(self.readers[d] > 0, 0.0, self.fixed[d])
        row: F64 = self.compute[j] + data[self.opt_site]
        return row

    def shared_cost(self, jobs: I64, opts: I64) -> float:
        """True cost of placing jobs on opts on top of the transfers the plan already makes."""
        placed = opts >= 0
        jobs, opts = jobs[placed], opts[placed]
        cost = float(self.compute[jobs, opts].sum())
        if len(self.inc_job):
            site = np.full(self.p.n_jobs, -1, dtype=np.int64)
            site[jobs] = self.opt_site[opts]
            s = site[self.inc_job]
            m = s >= 0
            pairs = np.unique(self.inc_ds[m] * self.n_sites + s[m])
            d, t = pairs // self.n_sites, pairs % self.n_sites
            new = self.readers[d, t] == 0
            cost += float(self.fixed[d[new], t[new]].sum())
        return cost

    # ------------------------------------------------------------------ solve one tier

    def solve(self, jobs: I64, rank: I64, stats: dict[str, float]) -> I64:
        """Target option per job (-1: unplaced), from min-cost flows with slope scaling."""
        p = self.p
        n_ds = self.fixed.shape[0]
        readers_in_batch = np.zeros((n_ds, 1))
        if n_ds:
            in_batch = np.zeros(p.n_jobs, dtype=bool)
            in_batch[jobs] = True
            np.add.at(readers_in_batch[:, 0], self.inc_ds[in_batch[self.inc_job]], 1.0)
        opened = self.readers > 0
        spread = np.where(opened, 0.0, self.fixed / np.maximum(readers_in_batch, 1.0))
        compute = self.compute[jobs]
        usable = self.usable[jobs]
        alone = np.where(usable, self.total[jobs], np.inf).min(axis=1)
        alone[~np.isfinite(alone)] = 0.0
        parts = self._partition(jobs)
        stats["parts"] = max(stats["parts"], float(len(parts)))
        best: I64 | None = None
        best_cost = math.inf
        stall = 0

        def solve_with(spread: F64) -> I64:
            stats["rounds"] += 1
            eff = compute + self.data_cost(jobs, spread)[:, self.opt_site]
            eff[~usable] = np.inf
            t0 = time.perf_counter()
            targets = self._flow(jobs, eff, parts, rank)
            stats["flow_s"] += time.perf_counter() - t0
            return targets

        def evaluate(targets: I64) -> float:
            # a job the flow left out will still be placed (fill step): count it at its cheapest option
            return self.shared_cost(jobs, targets) + float(alone[targets < 0].sum())

        def sent_by(targets: I64) -> F64:
            sent = np.zeros((n_ds, self.n_sites))
            site = np.full(p.n_jobs, -1, dtype=np.int64)
            site[jobs] = np.where(targets >= 0, self.opt_site[np.maximum(targets, 0)], -1)
            s = site[self.inc_job]
            m = s >= 0
            np.add.at(sent, (self.inc_ds[m], s[m]), 1.0)
            return sent

        # 2a. slope scaling until it stops gaining 0.1%
        for round_ in range(self.s.rounds):
            if round_ and self.out_of_time(0.6):
                break
            targets = solve_with(spread)
            cost = evaluate(targets)
            gain = best is None or cost < best_cost * (1 - 1e-3)
            if best is None or cost < best_cost:
                best, best_cost = targets, cost
            if n_ds == 0:
                return best
            stall = 0 if gain else stall + 1
            if stall >= 2:
                break
            sent = sent_by(targets)
            spread = np.where(opened, 0.0, np.where(sent > 0, self.fixed / np.maximum(sent, 1.0), self.fixed))
        assert best is not None
        # 2b. copies fixed (ADD/DROP for facility location): the best plan's copies cost nothing more; a
        # copy whose readers would save more than its price on compute is opened; unused ones close.
        site_starts = np.flatnonzero(np.r_[True, self.opt_site[1:] != self.opt_site[:-1]])
        for _ in range(self.s.add_rounds):
            if self.out_of_time(0.6):
                break
            open_now = opened | (sent_by(best) > 0)
            free = np.where(open_now, 0.0, self.fixed)
            eff = compute + self.data_cost(jobs, free)[:, self.opt_site]
            eff[~usable] = np.inf
            current = np.where(best >= 0, eff[np.arange(len(jobs)), np.maximum(best, 0)], alone)
            site_min = np.minimum.reduceat(np.where(usable, compute, np.inf), site_starts, axis=1)  # [jobs, sites]
            saving = np.maximum(0.0, current[:, None] - site_min[:, self.opt_site[site_starts]])
            benefit = np.zeros((n_ds, self.n_sites))
            local = np.full(p.n_jobs, -1, dtype=np.int64)
            local[jobs] = np.arange(len(jobs))
            rows = local[self.inc_job]
            m = rows >= 0
            np.add.at(benefit[:, self.opt_site[site_starts]], self.inc_ds[m], saving[rows[m]])
            benefit = np.where(open_now, -np.inf, benefit - self.fixed)
            best_site = benefit.argmax(axis=1)
            top = benefit[np.arange(n_ds), best_site]
            add = np.flatnonzero(top > 0)
            add = add[np.argsort(-top[add], kind="stable")][: max(1, n_ds // 10)]
            trial = open_now.copy()
            trial[add, best_site[add]] = True
            targets = solve_with(np.where(trial, 0.0, self.fixed))
            cost = evaluate(targets)
            if cost < best_cost * (1 - 1e-4):
                best, best_cost = targets, cost
            else:
                break
        return best

    def _partition(self, jobs: I64) -> list[I64]:
        """POP: split a large tier into parts of about `part_jobs`, keeping a dataset's readers together."""
        n_parts = max(1, math.ceil(len(jobs) / self.s.part_jobs))
        if n_parts == 1:
            return [np.arange(len(jobs))]
        group = np.full(len(jobs), -1, dtype=np.int64)
        for k, j in enumerate(jobs.tolist()):
            group[k] = self.ds_of[j][0] if self.ds_of[j] else -1 - k
        keys, inverse = np.unique(group, return_inverse=True)
        rng = np.random.default_rng(self.s.seed)
        perm = rng.permutation(len(keys))
        sizes = np.bincount(inverse.reshape(-1), minlength=len(keys))
        load = np.zeros(n_parts, dtype=np.int64)
        part_of_group = np.empty(len(keys), dtype=np.int64)
        for gi in perm[np.argsort(-sizes[perm], kind="stable")]:
            target = int(np.argmin(load))
            part_of_group[gi] = target
            load[target] += sizes[gi]
        part = part_of_group[inverse.reshape(-1)]
        return [np.flatnonzero(part == k) for k in range(n_parts) if (part == k).any()]

    def _flow(self, jobs: I64, eff: F64, parts: Sequence[I64], rank: I64) -> I64:
        """Min-cost flow per part on the current free capacity, shared out by each part's GPU demand."""
        cat = self.p.catalog
        pool_free = np.array([self.capacity.free_milli(i) // FULL for i in range(self.n_pools)], dtype=np.int64)
        site_free = np.full(self.n_sites, np.iinfo(np.int64).max // 8, dtype=np.int64)
        for si, site in enumerate(cat.sites):
            if site.burst_quota_gpus is not None:
                site_free[si] = int(self.capacity.site_quota_free[si] // FULL)
        pool_cost, pool_opt = self._per_pool(eff)
        pool_site = np.array([cat.site_index[pl.site] for pl in cat.pools], dtype=np.int64)
        # Saturation discovery: a pool (or a site's quota) the flow fills is scarce; scarce pools are
        # offered to every job that can use them, beside its `max_candidates` cheapest, and solved again.
        targets = np.full(len(jobs), -1, dtype=np.int64)
        if not self.discovered:
            self.scarce |= self._estimate_scarce(pool_cost, self.units[jobs], pool_free, site_free, pool_site)
        self.discovered = True
        # one flow per round: the pools it fills join the scarce set of the next round
        for _ in range(1):
            targets = self._assign(jobs, pool_cost, pool_opt, parts, rank, pool_free, site_free, pool_site)
            used = targets >= 0
            load_pool = np.bincount(
                self.opt_pool[targets[used]], weights=self.units[jobs[used]], minlength=self.n_pools
            )
            load_site = np.bincount(
                self.opt_site[targets[used]], weights=self.units[jobs[used]], minlength=self.n_sites
            )
            # the pools this flow filled join the scarce set of the next round
            self.scarce |= ((load_pool >= pool_free) & (pool_free > 0)) | (load_site >= site_free)[pool_site]
        return targets

    def _estimate_scarce(
        self, pool_cost: F64, units: I64, pool_free: I64, site_free: I64, pool_site: I64
    ) -> npt.NDArray[np.bool_]:
        """Pools every job's cheapest choice would overfill, cascading: a job whose favourite is
        over-asked turns to its next one, which may overfill in turn (a few rounds, vectorised)."""
        scarce = np.zeros(self.n_pools, dtype=bool)
        for _ in range(self.s.estimate_rounds):
            masked = np.where(scarce[None, :], np.inf, pool_cost)
            choice = masked.argmin(axis=1)
            ok = np.isfinite(masked[np.arange(len(units)), choice])
            load = np.bincount(choice[ok], weights=units[ok], minlength=self.n_pools)
            site_load = np.bincount(pool_site[choice[ok]], weights=units[ok], minlength=self.n_sites)
            over = (load > pool_free) | (site_load > site_free)[pool_site]
            new = over & ~scarce
            if not new.any():
                break
            scarce |= new
        return scarce

    def _per_pool(self, eff: F64) -> tuple[F64, I64]:
        """[jobs, pools]: each job's cheaper usable option in each pool (on-demand or spot), and which."""
        cols = self.opt_pool
        starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        if len(starts) != self.n_pools or np.any(np.diff(np.r_[starts, len(cols)]) > 2):
            raise ValueError("options: expected each pool's options together, at most on-demand and spot")
        first = eff[:, starts]
        second_col = np.minimum(starts + 1, len(cols) - 1)
        has_second = np.r_[starts[1:], len(cols)] - starts == 2
        second = np.where(has_second[None, :], eff[:, second_col], np.inf)
        pick_second = second < first
        cost = np.where(pick_second, second, first)
        opt = np.where(pick_second, second_col[None, :], starts[None, :]).astype(np.int64)
        return cost, opt

    def _assign(
        self,
        jobs: I64,
        pool_cost: F64,
        pool_opt: I64,
        parts: Sequence[I64],
        rank: I64,
        pool_free: I64,
        site_free: I64,
        pool_site: I64,
    ) -> I64:
        units = self.units[jobs]
        targets = np.full(len(jobs), -1, dtype=np.int64)
        left_pool = pool_free.copy()
        left_site = site_free.copy()
        todo = [np.asarray(part) for part in parts]
        # Pass 1 solves each part on its share of capacity; pass 2 gives the jobs left out (their
        # candidate pools filled up) one more flow, together, over every pool that still has room.
        for full in (False, True):
            demand_total = float(sum(units[part].sum() for part in todo))
            if demand_total == 0:
                break
            open_pool = (left_pool > 0) & (left_site[pool_site] > 0)
            pool_now, site_now = left_pool.copy(), left_site.copy()
            for i, part in enumerate(todo):
                share = float(units[part].sum()) / demand_total
                last = i == len(todo) - 1
                cap_pool = left_pool if last else np.minimum(left_pool, np.floor(pool_now * share).astype(np.int64))
                cap_site = left_site if last else np.minimum(left_site, np.floor(site_now * share).astype(np.int64))
                costs = np.where(open_pool[None, :], pool_cost[part], np.inf)
                chosen = self._flow_part(
                    costs,
                    pool_opt[part],
                    units[part],
                    rank[jobs[part]],
                    self.tier[jobs[part]],
                    cap_pool,
                    cap_site,
                    full=full and len(part) * self.n_pools <= 400_000,
                )
                targets[part] = chosen
                used = chosen >= 0
                np.subtract.at(left_pool, self.opt_pool[chosen[used]], units[part][used])
                np.subtract.at(left_site, self.opt_site[chosen[used]], units[part][used])
                np.maximum(left_pool, 0, out=left_pool)
                np.maximum(left_site, 0, out=left_site)
            rest = np.concatenate([part[targets[part] < 0] for part in todo])
            if not len(rest):
                break
            n_parts = max(1, math.ceil(len(rest) / self.s.part_jobs))
            todo = [rest[k::n_parts] for k in range(n_parts)]
        return targets

    def _flow_part(
        self,
        pool_cost: F64,
        pool_opt: I64,
        units: I64,
        rank: I64,
        tier: I64,
        cap_pool: I64,
        cap_site: I64,
        *,
        full: bool = False,
    ) -> I64:
        n, n_pools = pool_cost.shape
        # Candidates: the few cheapest pools that have not filled up, plus the cheapest filled-up
        # (scarce) pools that beat them: a dearer scarce pool can never beat a pool with room.
        scarce = self.scarce
        plain = np.where(scarce[None, :], np.inf, pool_cost)
        k_plain = min(self.s.plain_candidates, n_pools)
        kth = np.partition(plain, k_plain - 1, axis=1)[:, k_plain - 1] if k_plain < n_pools else plain.max(axis=1)
        tight = np.where(scarce[None, :] & (pool_cost <= kth[:, None]), pool_cost, np.inf)
        k_tight = min(self.s.max_candidates, n_pools)
        pick_plain = np.argpartition(plain, k_plain - 1, axis=1)[:, :k_plain] if k_plain < n_pools else None
        pick_tight = np.argpartition(tight, k_tight - 1, axis=1)[:, :k_tight] if k_tight < n_pools else None
        if full or pick_plain is None or pick_tight is None:
            cand = np.tile(np.arange(n_pools), (n, 1))
            cand_cost = pool_cost.copy()
        else:
            cand = np.concatenate([pick_plain, pick_tight], axis=1)
            cand_cost = np.concatenate(
                [np.take_along_axis(plain, pick_plain, axis=1), np.take_along_axis(tight, pick_tight, axis=1)], axis=1
            )
        k = cand.shape[1]
        order = np.argsort(cand_cost, axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=1)
        cand_cost = np.take_along_axis(cand_cost, order, axis=1)
        ok = np.isfinite(cand_cost)
        per_unit = np.where(ok, cand_cost, 0.0) / units[:, None]
        unit_micro = to_micro(per_unit)
        top = int(unit_micro.max()) if unit_micro.size else 0
        # Unplaced costs more than any option; urgent jobs (earlier in the order) a little more.
        # Leaving a unit unplaced costs more than any option, x4 per tier above the lowest (capped),
        # and up to x2 for urgency within a tier (earlier in the job order: earlier deadline).
        urgency = 1.0 - (np.argsort(np.argsort(rank)) / max(n, 1))
        weight = np.power(4.0, np.minimum(tier, 6)) * (1.0 + urgency)
        penalty = np.rint((2 * top + MICRO_USD) * weight).astype(np.int64)
        # int64 safety: a coarser money unit when the batch's worst total would not fit
        coarse = 1
        while float(penalty.max(initial=0)) * float(units.sum()) / coarse > 2.0**61:
            coarse *= 10
        if coarse > 1:
            unit_micro //= coarse
            penalty = np.maximum(penalty // coarse, 1)
        sink = n + n_pools + self.n_sites
        job_ids = np.arange(n, dtype=np.int64)
        rows, cols = np.nonzero(ok)
        tails = np.concatenate([rows, job_ids, n + np.arange(n_pools), n + n_pools + np.arange(self.n_sites)]).astype(
            np.int32
        )
        heads = np.concatenate(
            [
                n + cand[rows, cols],
                np.full(n, sink),
                n + n_pools + np.array([self.p.catalog.site_index[pl.site] for pl in self.p.catalog.pools]),
                np.full(self.n_sites, sink),
            ]
        ).astype(np.int32)
        caps = np.concatenate([units[rows], units, np.maximum(cap_pool, 0), np.maximum(cap_site, 0)])
        costs = np.concatenate([unit_micro[rows, cols], penalty, np.zeros(n_pools + self.n_sites, dtype=np.int64)])
        flow = min_cost_flow.SimpleMinCostFlow()
        arcs = flow.add_arcs_with_capacity_and_unit_cost(tails, heads, caps.astype(np.int64), costs.astype(np.int64))
        supplies = np.zeros(sink + 1, dtype=np.int64)
        supplies[:n] = units
        supplies[sink] = -int(units.sum())
        flow.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supplies)
        status = flow.solve()
        if status != flow.OPTIMAL:
            raise RuntimeError(f"min-cost flow failed: {status}")
        sent = np.zeros((n, k), dtype=np.int64)
        sent[rows, cols] = flow.flows(arcs[: len(rows)])
        # the pool that got most of the job (ties: the cheaper, listed first)
        pick = sent.argmax(axis=1)
        got = sent[job_ids, pick] > 0
        chosen_pool = cand[job_ids, pick]
        return np.where(got, pool_opt[job_ids, chosen_pool], -1)

    # ------------------------------------------------------------------ binding and repair

    def bind(self, jobs: I64, targets: I64) -> None:
        """Bind every target to nodes, largest gangs first; a job that does not bind falls back."""
        order = np.lexsort((np.arange(len(jobs)), -self.units[jobs], -self.gang[jobs]))
        for k in order.tolist():
            j, o = int(jobs[k]), int(targets[k])
            if o >= 0 and self._try(j, o):
                continue
            if o >= 0:
                self._fallback(j)

    def fill(self, jobs: I64) -> None:
        """Jobs still unplaced (and not deliberately waiting) take their cheapest option that binds."""
        for j in jobs.tolist():
            if self.option[j] < 0 and not self.deferred_mark[j]:
                self._fallback(int(j))

    def _try(self, j: int, o: int) -> bool:
        pool = int(self.opt_pool[o])
        demand = self.p.demands[j]
        if self._no_room.get((int(self.kinds[j]), pool)):
            self.blocked[j] |= int(Reason.CAPACITY)
            return False
        key = self.p.budget_key[j]
        if key is not None and float(self.total[j, o]) > self.budgets[key] + 1e-9:
            self.blocked[j] |= int(Reason.BUDGET)
            return False
        bindings = self.capacity.find(pool, demand)
        if bindings is None:
            self._no_room[(int(self.kinds[j]), pool)] = True
            self.blocked[j] |= int(Reason.CAPACITY)
            return False
        self._take(j, o, bindings)
        return True

    def room(self, j: int) -> B:
        """[options]: the pool (and the site quota, for cloud pools) has job j's GPUs free in aggregate."""
        need = self.milli[j]
        ok: B = (self.free_pool[self.opt_pool] >= need) & (~self.elastic | (self.free_site[self.opt_site] >= need))
        return ok

    def _take(self, j: int, o: int, bindings: tuple[NodeBinding, ...]) -> None:
        pool = int(self.opt_pool[o])
        self.capacity.take(pool, self.p.demands[j], bindings)
        self.free_pool[pool] -= self.milli[j]
        if self.elastic[o]:
            self.free_site[int(self.opt_site[o])] -= self.milli[j]
        self.option[j] = o
        self.bindings[j] = bindings
        key = self.p.budget_key[j]
        if key is not None:
            self.budgets[key] -= float(self.total[j, o])
        site = int(self.opt_site[o])
        for d in self.ds_of[j]:
            self.readers[d, site] += 1

    def _release(self, j: int) -> int:
        o = int(self.option[j])
        pool = int(self.opt_pool[o])
        self.capacity.release(pool, self.p.demands[j], self.bindings[j])
        self.free_pool[pool] += self.milli[j]
        if self.elastic[o]:
            self.free_site[int(self.opt_site[o])] += self.milli[j]
        key = self.p.budget_key[j]
        if key is not None:
            self.budgets[key] += float(self.total[j, o])
        site = int(self.opt_site[o])
        for d in self.ds_of[j]:
            self.readers[d, site] -= 1
        self.option[j] = -1
        self.bindings[j] = ()
        self._no_room.clear()  # capacity grew: what did not fit may fit now
        return o

    def _fallback(self, j: int) -> bool:
        row = self.marginal_row(j)
        room = self.room(j)
        if (self.usable[j] & ~room).any():
            self.blocked[j] |= int(Reason.CAPACITY)
        cands = np.flatnonzero(self.usable[j] & room)
        if len(cands) == 0:
            return False
        cands = cands[np.lexsort((cands, row[cands]))]
        return any(self._try(j, int(o)) for o in cands)

    # ------------------------------------------------------------------ improvement

    def improve(self, jobs: I64) -> bool:
        """One pass of cheaper single moves and transfer closings; True when something improved."""
        moved = self._single_moves(jobs)
        closed = self._close_transfers(jobs)
        return moved + closed > 0

    def _priced_with_room(self, placed: I64) -> tuple[F64, B]:
        """Per placed job x option: compute plus data (the job's own transfers counted as open,
        others as the plan stands), and whether the option's pool (and site quota) has room now."""
        sole = np.where(self.readers > 0, 0.0, self.fixed)
        eff = self.compute[placed] + self.data_cost(placed, sole)[:, self.opt_site]
        need = self.milli[placed][:, None]
        room = (self.free_pool[self.opt_pool][None, :] >= need) & (
            ~self.elastic[None, :] | (self.free_site[self.opt_site][None, :] >= need)
        )
        return eff, room

    def _single_moves(self, jobs: I64) -> int:
        placed = jobs[self.option[jobs] >= 0]
        if len(placed) == 0:
            return 0
        # marginal cost of every option for each placed job, its own transfers counted as open
        eff, room = self._priced_with_room(placed)
        room |= self.opt_pool[None, :] == self.opt_pool[self.option[placed]][:, None]
        eff[~(self.usable[placed] & room)] = np.inf
        cur = self.option[placed]
        current = self.compute[placed, cur] + self._leave_saving(placed)
        gain = current - eff.min(axis=1)
        cand = np.flatnonzero(gain > np.maximum(0.01, 1e-3 * current))  # a cent, or 0.1% of the job, at least
        moves = 0
        for k in cand[np.argsort(-gain[cand], kind="stable")].tolist():
            if self.out_of_time(0.85):
                break
            j = int(placed[k])
            old = int(self.option[j])
            before = self.marginal_cost_here(j, old)
            row = self.marginal_row_without(j)
            mine = self.opt_pool == self.opt_pool[old]
            better = np.flatnonzero(self.usable[j] & (self.room(j) | mine) & (row < before - 1e-6))
            if len(better) == 0:
                continue
            better = better[np.lexsort((better, row[better]))]
            for o in better.tolist():
                pool = int(self.opt_pool[o])
                if pool == int(self.opt_pool[old]):
                    bindings: tuple[NodeBinding, ...] | None = self.bindings[j]
                else:
                    bindings = self.capacity.find(pool, self.p.demands[j])
                key = self.p.budget_key[j]
                if bindings is None or (
                    key is not None and float(self.total[j, o]) > self.budgets[key] + float(self.total[j, old]) + 1e-9
                ):
                    continue
                self._release(j)
                if pool == int(self.opt_pool[old]):
                    assert bindings is not None
                    self._take(j, o, bindings)
                else:
                    fresh = self.capacity.find(pool, self.p.demands[j])
                    self._take(j, o, fresh if fresh is not None else bindings)
                moves += 1
                break
        return moves

    def _leave_saving(self, jobs: I64) -> F64:
        """Per job: the transfers it alone needs at its current site (saved if it leaves)."""
        out = np.zeros(len(jobs))
        for k, j in enumerate(jobs.tolist()):
            site = int(self.opt_site[self.option[j]])
            for d in self.ds_of[j]:
                if self.readers[d, site] == 1:
                    out[k] += self.fixed[d, site]
        return out

    def marginal_cost_here(self, j: int, o: int) -> float:
        site = int(self.opt_site[o])
        data = sum(float(self.fixed[d, site]) for d in self.ds_of[j] if self.readers[d, site] == 1)
        return float(self.compute[j, o]) + data

    def marginal_row_without(self, j: int) -> F64:
        """Like marginal_row, with job j's own readership taken out."""
        o = int(self.option[j])
        site = int(self.opt_site[o]) if o >= 0 else -1
        data = np.zeros(self.n_sites)
        for d in self.ds_of[j]:
            readers = self.readers[d].copy()
            if site >= 0:
                readers[site] -= 1
            data += np.where(readers > 0, 0.0, self.fixed[d])
        row: F64 = self.compute[j] + data[self.opt_site]
        return row

    def _close_transfers(self, jobs: I64) -> int:
        """Move all readers of a copy elsewhere when that beats paying for the copy."""
        if self.fixed.size == 0:
            return 0
        in_set = np.zeros(self.p.n_jobs, dtype=bool)
        in_set[jobs] = True
        placed = jobs[self.option[jobs] >= 0]
        if len(placed) == 0:
            return 0
        # Optimistic alternative per placed job: its cheapest usable option at another site with room
        # in aggregate (data priced as the plan stands). A copy is worth trying to close only if its
        # price plus its readers' compute beats their optimistic alternatives.
        eff, room = self._priced_with_room(placed)
        here = self.opt_site[self.option[placed]]
        eff[~(self.usable[placed] & room) | (self.opt_site[None, :] == here[:, None])] = np.inf
        alt = np.full(self.p.n_jobs, np.inf)
        alt[placed] = eff.min(axis=1)
        cur = np.zeros(self.p.n_jobs)
        cur[placed] = self.compute[placed, self.option[placed]]
        site_of = np.full(self.p.n_jobs, -1, dtype=np.int64)
        site_of[placed] = here
        inc_site = site_of[self.inc_job]
        keep = inc_site >= 0
        keep[keep] = self.fixed[self.inc_ds[keep], inc_site[keep]] > 0
        keys = self.inc_ds[keep] * self.n_sites + inc_site[keep]
        readers_of = self.inc_job[keep]
        if len(keys) == 0:
            return 0
        order = np.argsort(keys, kind="stable")
        keys, readers_of = keys[order], readers_of[order]
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
        groups = []
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            group = readers_of[a:b]
            d, s = divmod(int(keys[a]), self.n_sites)
            if len(group) > 64 or not in_set[group].all():
                continue
            if self.fixed[d, s] + (cur[group] - alt[group]).sum() <= 1e-6:
                continue
            groups.append((d, s, group.tolist()))
        closed = 0
        for d, s, group in groups:
            if self.out_of_time(0.85):
                break
            readers = [j for j in group if self.option[j] >= 0 and int(self.opt_site[self.option[j]]) == s]
            if not readers or len(readers) != int(self.readers[d, s]):
                continue
            saved = float(self.fixed[d, s]) + sum(float(self.compute[j, self.option[j]]) for j in readers)
            old = {j: (int(self.option[j]), self.bindings[j]) for j in readers}
            budgets = dict(self.budgets)
            for j in readers:
                self._release(j)
            spent = 0.0
            ok = True
            for j in readers:
                row = self.marginal_row(j)
                cands = np.flatnonzero(self.usable[j] & self.room(j) & (self.opt_site != s))
                cands = cands[np.lexsort((cands, row[cands]))]
                moved = False
                for o in cands.tolist():
                    spent_here = float(row[o])
                    if spent + spent_here >= saved:
                        break
                    if self._try(j, o):
                        spent += spent_here
                        moved = True
                        break
                if not moved:
                    ok = False
                    break
            if ok and spent < saved - 1e-6:
                closed += 1
                continue
            # undo: put every reader back where it was
            for j in readers:
                if self.option[j] >= 0:
                    self._release(j)
            self.budgets = budgets
            for j, (o, b) in old.items():
                self.capacity.take(int(self.opt_pool[o]), self.p.demands[j], b)
                self.option[j] = o
                self.bindings[j] = b
                for dd in self.ds_of[j]:
                    self.readers[dd, int(self.opt_site[o])] += 1
        return closed

    # ------------------------------------------------------------------ priority

    def protect_priority(self, order: I64) -> int:
        """Eviction repair: an unplaced job takes capacity held by lower-tier jobs it fits into.

        For each unplaced (not deferred) job, highest tier first, and each of its usable options
        cheapest first: release lower-tier jobs of that pool one by one (lowest tier first) until the
        job binds; then the evicted jobs look for another place. If it never binds, nothing changes."""
        prio = self.p.priority
        moved = 0
        for j in order.tolist():
            if self.option[j] >= 0 or self.deferred_mark[j] or not self.usable[j].any():
                continue
            placed = np.flatnonzero((self.option >= 0) & (prio < prio[j]))
            if len(placed) == 0:
                continue
            pool_of = self.opt_pool[self.option[placed]]
            row = self.marginal_row(j)
            cands = np.flatnonzero(self.usable[j])
            for o in cands[np.lexsort((cands, row[cands]))].tolist():
                pool = int(self.opt_pool[o])
                victims = placed[pool_of == pool]
                if len(victims) == 0:
                    continue
                key = self.p.budget_key[j]
                if key is not None and float(self.total[j, o]) > self.budgets[key] + 1e-9:
                    continue
                victims = victims[np.lexsort((-self.units[victims], prio[victims]))]
                released: list[tuple[int, int, tuple[NodeBinding, ...]]] = []
                bindings = None
                for v in victims.tolist():
                    released.append((v, int(self.option[v]), self.bindings[v]))
                    self._release(v)
                    bindings = self.capacity.find(pool, self.p.demands[j])
                    if bindings is not None:
                        break
                if bindings is None:
                    for v, vo, vb in reversed(released):
                        self._take(v, vo, vb)
                    continue
                self._take(j, o, bindings)
                for v, _, _ in released:
                    self.blocked[v] |= int(Reason.CAPACITY)
                    self._fallback(v)
                moved += 1
                break
        return moved

    # ------------------------------------------------------------------ waiting and output

    def wait(self, order: I64) -> dict[int, Decision]:
        planner = WaitPlanner(self.p)
        out: dict[int, Decision] = {}
        if not planner.active:
            return out
        placed = order[self.option[order] >= 0]
        # only jobs with an eligible option cheaper than their own can wait
        eligible = self.usable | ((self.p.reasons & ~int(Reason.CAPACITY)) == 0)
        best = np.where(eligible[placed], self.total[placed], np.inf).min(axis=1)
        mine = self.total[placed, self.option[placed]]
        for j in placed[best < mine - 1e-9].tolist():
            o = int(self.option[j])
            pool = int(self.opt_pool[o])
            demand, bindings = self.p.demands[j], self.bindings[j]
            self._release(j)
            decision = planner.consider(j, o, self.capacity)
            if decision is None:
                self._take(j, o, bindings)
                planner.note_taken(pool, demand, bindings)
                continue
            out[j] = decision
            self.deferred_mark[j] = True
        return out

    def decisions(self, deferred: dict[int, Decision]) -> list[Decision]:
        """One decision per job. A placed job carries CAPACITY (or BUDGET) when a cheaper usable
        option exists: what kept it from there. An unplaced one carries what blocked it."""
        p = self.p
        placed = self.option >= 0
        mine = np.where(placed, self.total[np.arange(p.n_jobs), np.maximum(self.option, 0)], np.inf)
        cheapest = np.where(self.usable, self.total, np.inf).min(axis=1) if p.n_options else np.full(p.n_jobs, np.inf)
        kept = placed & (cheapest < mine - 1e-9)
        why = np.where(
            kept, np.where(self.blocked & int(Reason.CAPACITY | Reason.BUDGET), self.blocked, int(Reason.CAPACITY)), 0
        ) & int(Reason.CAPACITY | Reason.BUDGET)
        out: list[Decision] = []
        options, reasons = self.option.tolist(), why.tolist()
        for j in range(p.n_jobs):
            if j in deferred:
                out.append(deferred[j])
            elif options[j] < 0:
                out.append(Decision(job=j, reason=waiting_reason(p, j, int(self.blocked[j]))))
            else:
                out.append(Decision(job=j, option=options[j], bindings=self.bindings[j], reason=reasons[j]))
        return out
