"""Data gravity accounting: one copy of a dataset to a site serves every job of the plan that reads it there.

The rule every placer's result is priced with (greedy, egress-blind and joint alike):

* For each (dataset, destination site) that the plan's placements need and where no replica is
  live, ONE transfer is paid: egress `problem.dataset_egress_usd[d, s]` from the cheapest replica
  and storage of the new cached copy for its time-to-live `problem.dataset_storage_usd[d, s]`.
  These are the problem's own numbers (the per-job `egress_usd` / `storage_usd` are their sums
  over the datasets a job reads), so nothing is priced twice or differently.
* The transfer is attributed in equal shares to the jobs of the plan that read the dataset at that
  site: each job's `Decision.cost` carries its compute plus its shares, and each of its
  `Decision.data_moves` carries its share in `egress_usd`. The shares of a transfer sum to the
  transfer exactly, so the plan's total is the true bill.
* Every such transfer leaves a cached copy, reported in `PlacementResult.new_replicas`; the service
  records it with the replica TTL so later jobs find the data local.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from placers.domain import CostBreakdown, DataMove
from placers.problem import PlacementProblem
from placers.result import Decision

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Transfers:
    """The distinct (dataset, site) copies a plan makes, and which placed jobs read each."""

    dataset: I64  # per transfer: dataset row
    site: I64  # per transfer: destination site
    egress_usd: npt.NDArray[np.float64]
    storage_usd: npt.NDArray[np.float64]
    readers: I64  # per transfer: how many jobs of the plan read it there
    inc_job: I64  # per (placed job, dataset moved) incidence: job row
    inc_transfer: I64  # ... and the transfer it shares

    @property
    def total_usd(self) -> float:
        return float(self.egress_usd.sum() + self.storage_usd.sum())


SMALL_PLAN = 32  # incidences up to which plain Python beats numpy's per-call overhead


def transfers(
    problem: PlacementProblem,
    jobs: Sequence[int] | npt.NDArray[np.int64],
    options: Sequence[int] | npt.NDArray[np.int64],
) -> Transfers:
    """The copies placing `jobs[i]` on `options[i]` needs, each counted once."""
    n_sites = len(problem.catalog.sites)
    if len(problem.job_dataset[0]) <= SMALL_PLAN:
        return _transfers_small(problem, jobs, options, n_sites)
    site_of_job = np.full(problem.n_jobs, -1, dtype=np.int64)
    if len(jobs):
        site_of_job[np.asarray(jobs, dtype=np.int64)] = problem.options.site[np.asarray(options, dtype=np.int64)]
    inc_job, inc_ds = (a.astype(np.int64) for a in problem.job_dataset)
    site = site_of_job[inc_job]
    moved = site >= 0
    moved[moved] = problem.dataset_source[inc_ds[moved], site[moved]] != site[moved]
    inc_job, inc_ds, site = inc_job[moved], inc_ds[moved], site[moved]
    keys, inverse, readers = np.unique(inc_ds * n_sites + site, return_inverse=True, return_counts=True)
    d, s = keys // n_sites, keys % n_sites
    return Transfers(
        dataset=d,
        site=s,
        egress_usd=problem.dataset_egress_usd[d, s] if len(keys) else np.zeros(0),
        storage_usd=problem.dataset_storage_usd[d, s] if len(keys) else np.zeros(0),
        readers=readers,
        inc_job=inc_job,
        inc_transfer=inverse.reshape(-1),
    )


def _transfers_small(
    problem: PlacementProblem,
    jobs: Sequence[int] | npt.NDArray[np.int64],
    options: Sequence[int] | npt.NDArray[np.int64],
    n_sites: int,
) -> Transfers:
    """transfers() for a plan with few (job, dataset) pairs: the same arrays, built in Python."""
    site_of = {int(j): int(problem.options.site[int(o)]) for j, o in zip(jobs, options, strict=True)}
    src = problem.dataset_source
    inc_job: list[int] = []
    keys_of: list[int] = []
    for j, d in zip(problem.job_dataset[0].tolist(), problem.job_dataset[1].tolist(), strict=True):
        site = site_of.get(j)
        if site is None or int(src[d, site]) == site:
            continue
        inc_job.append(j)
        keys_of.append(d * n_sites + site)
    keys = sorted(set(keys_of))
    index = {k: i for i, k in enumerate(keys)}
    readers = [0] * len(keys)
    inverse = []
    for k in keys_of:
        readers[index[k]] += 1
        inverse.append(index[k])
    key_arr = np.array(keys, dtype=np.int64)
    d, s = key_arr // n_sites, key_arr % n_sites
    return Transfers(
        dataset=d,
        site=s,
        egress_usd=problem.dataset_egress_usd[d, s] if keys else np.zeros(0),
        storage_usd=problem.dataset_storage_usd[d, s] if keys else np.zeros(0),
        readers=np.array(readers, dtype=np.int64),
        inc_job=np.array(inc_job, dtype=np.int64),
        inc_transfer=np.array(inverse, dtype=np.int64),
    )


def plan_cost(problem: PlacementProblem, decisions: Sequence[Decision]) -> CostBreakdown:
    """The true bill of a plan: compute per job plus each distinct transfer once."""
    placed = [d for d in decisions if d.placed]
    jobs = [d.job for d in placed]
    opts = [d.option for d in placed]
    t = transfers(problem, jobs, opts)
    compute = float(problem.compute_usd[jobs, opts].sum()) if jobs else 0.0
    return CostBreakdown(compute, float(t.egress_usd.sum()), float(t.storage_usd.sum()))


def attribute(
    problem: PlacementProblem, decisions: Sequence[Decision]
) -> tuple[list[Decision], dict[str, tuple[str, ...]]]:
    """Decisions with shared-transfer costs and data moves filled in, and the new cached copies."""
    placed = [d for d in decisions if d.placed]
    jobs = np.array([d.job for d in placed], dtype=np.int64)
    opts = np.array([d.option for d in placed], dtype=np.int64)
    t = transfers(problem, jobs, opts)
    share_egress = t.egress_usd / np.maximum(t.readers, 1)
    share_storage = t.storage_usd / np.maximum(t.readers, 1)
    egress = np.zeros(problem.n_jobs)
    storage = np.zeros(problem.n_jobs)
    np.add.at(egress, t.inc_job, share_egress[t.inc_transfer])
    np.add.at(storage, t.inc_job, share_storage[t.inc_transfer])
    compute = np.zeros(problem.n_jobs)
    if len(jobs):
        compute[jobs] = problem.compute_usd[jobs, opts]
    cat = problem.catalog
    ids = list(problem.dataset_index)
    sites = [s.name for s in cat.sites]
    size_gb = {x.id: x.size_gb for ds in problem.datasets for x in ds}
    # one DataMove per transfer, shared by its readers (frozen, so sharing the object is safe)
    move = [
        DataMove(
            dataset_id=ids[d],
            from_site=sites[int(problem.dataset_source[d, s])],
            to_site=sites[s],
            size_gb=size_gb[ids[d]],
            egress_usd=float(share_egress[x]),
            transfer_s=float(problem.dataset_transfer_s[d, s]),
        )
        for x, (d, s) in enumerate(zip(t.dataset.tolist(), t.site.tolist(), strict=True))
    ]
    moves_of: dict[int, list[DataMove]] = {}
    for j, x in zip(t.inc_job.tolist(), t.inc_transfer.tolist(), strict=True):
        moves_of.setdefault(j, []).append(move[x])
    c_list, e_list, s_list = compute.tolist(), egress.tolist(), storage.tolist()
    out: list[Decision] = []
    for dec in decisions:
        if not dec.placed:
            out.append(dec)
            continue
        j = dec.job
        out.append(
            Decision(
                job=j,
                option=dec.option,
                bindings=dec.bindings,
                reason=dec.reason,
                note=dec.note,
                cost=CostBreakdown(c_list[j], e_list[j], s_list[j]),
                data_moves=tuple(moves_of.get(j, ())),
                start_at=dec.start_at,
                retry_at=dec.retry_at,
            )
        )
    new: dict[str, set[str]] = {}
    for d, s in zip(t.dataset.tolist(), t.site.tolist(), strict=True):
        new.setdefault(ids[d], set()).add(sites[s])
    return out, {k: tuple(sorted(v)) for k, v in sorted(new.items())}
