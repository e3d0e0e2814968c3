"""Free capacity per pool, at node and GPU granularity where fragmentation is real.

On-prem pools are node-bound: each node has `gpus_per_node` GPU slots with free capacity in
milli-GPUs (1000 = a whole GPU, less when a slot is shared), plus free CPU and memory. A job
binds to concrete nodes and slots, so fragmentation is measured, not assumed away.

Cloud pools are elastic: each job gets its own instance, so only the GPU quota of the pool
and the burst quota of the site bound them.

`CapacityState` is a value: placers work on a copy (`copy()`), the store keeps the
committed one. Binding is deterministic: best-fit by default (fewest free GPUs that fit,
lowest node index on ties).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from placers.catalog import Catalog, Pool
from placers.domain import JobSpec, NodeBinding

FULL = 1000  # milli-GPUs in one GPU


class NodeChoice(enum.StrEnum):
    """How a node is chosen among those that fit."""

    BEST_FIT = "best_fit"  # fewest free GPUs left after binding: keeps whole nodes free for gangs
    WORST_FIT = "worst_fit"  # most free GPUs: spreads load
    FIRST_FIT = "first_fit"


@dataclass(frozen=True, slots=True)
class Demand:
    """What one job asks of a pool: `replicas` x `gpus` GPUs at `gpu_milli` each."""

    gpus: int
    gpu_milli: int = FULL
    cpu_milli: int = 0  # per replica
    memory_mib: int = 0  # per replica
    single_node: bool = False  # each replica's GPUs on one node
    replicas: int = 1
    spread: bool = False  # replicas on distinct nodes

    @classmethod
    def of(cls, spec: JobSpec) -> Demand:
        inf = spec.inference
        return cls(
            gpus=spec.gpus,
            gpu_milli=spec.gpu_milli,
            cpu_milli=round(spec.cpus * 1000),
            memory_mib=round(spec.memory_gb * 1024),
            single_node=spec.single_node or spec.gpus == 1,
            replicas=inf.replicas if inf else 1,
            spread=bool(inf and inf.spread),
        )

    @property
    def total_milli(self) -> int:
        return self.gpus * self.gpu_milli * self.replicas


class CapacityState:
    """Free capacity of every pool of a catalog."""

    __slots__ = ("catalog", "cpu_free", "elastic_free", "gpu_free", "mem_free", "site_quota_free")

    def __init__(
        self,
        catalog: Catalog,
        gpu_free: list[npt.NDArray[np.int32]],
        cpu_free: list[npt.NDArray[np.int64]],
        mem_free: list[npt.NDArray[np.int64]],
        elastic_free: npt.NDArray[np.int64],
        site_quota_free: npt.NDArray[np.int64],
    ) -> None:
        self.catalog = catalog
        self.gpu_free = gpu_free  # per pool [nodes, gpus_per_node] milli; empty for elastic pools
        self.cpu_free = cpu_free  # per pool [nodes] milli-CPU (node-bound pools)
        self.mem_free = mem_free  # per pool [nodes] MiB (node-bound pools)
        self.elastic_free = elastic_free  # per pool milli-GPU left in the pool's quota (elastic pools)
        self.site_quota_free = site_quota_free  # per site milli-GPU left in its burst quota

    @classmethod
    def empty(cls, catalog: Catalog) -> CapacityState:
        """All capacity free."""
        gpu, cpu, mem = [], [], []
        elastic = np.zeros(len(catalog.pools), dtype=np.int64)
        for i, p in enumerate(catalog.pools):
            if p.elastic:
                gpu.append(np.zeros((0, p.gpus_per_node), dtype=np.int32))
                cpu.append(np.zeros(0, dtype=np.int64))
                mem.append(np.zeros(0, dtype=np.int64))
                elastic[i] = p.max_gpus * FULL
            else:
                gpu.append(np.full((p.nodes, p.gpus_per_node), FULL, dtype=np.int32))
                cpu.append(np.full(p.nodes, _cpu_milli(p), dtype=np.int64))
                mem.append(np.full(p.nodes, _mem_mib(p), dtype=np.int64))
        big = np.iinfo(np.int64).max // 4
        quota = np.array(
            [s.burst_quota_gpus * FULL if s.burst_quota_gpus is not None else big for s in catalog.sites],
            dtype=np.int64,
        )
        return cls(catalog, gpu, cpu, mem, elastic, quota)

    def copy(self) -> CapacityState:
        return CapacityState(
            self.catalog,
            [a.copy() for a in self.gpu_free],
            [a.copy() for a in self.cpu_free],
            [a.copy() for a in self.mem_free],
            self.elastic_free.copy(),
            self.site_quota_free.copy(),
        )

    # ----------------------------------------------------------------- queries

    def free_milli(self, pool_index: int) -> int:
        """Free milli-GPUs in a pool (bounded by the site quota for elastic pools)."""
        pool = self.catalog.pools[pool_index]
        if pool.elastic:
            site = self.catalog.site_index[pool.site]
            return int(min(self.elastic_free[pool_index], self.site_quota_free[site]))
        return int(self.gpu_free[pool_index].sum())

    def free_gpus(self, pool_index: int) -> float:
        return self.free_milli(pool_index) / FULL

    def pool_free_gpus(self) -> npt.NDArray[np.float64]:
        return np.array([self.free_gpus(i) for i in range(len(self.catalog.pools))])

    def max_whole_gpus_on_a_node(self, pool_index: int) -> int:
        pool = self.catalog.pools[pool_index]
        if pool.elastic:
            return min(pool.gpus_per_node, self.free_milli(pool_index) // FULL)
        g = self.gpu_free[pool_index]
        return int((g == FULL).sum(axis=1).max()) if len(g) else 0

    # ----------------------------------------------------------------- binding

    def find(
        self, pool_index: int, demand: Demand, choice: NodeChoice = NodeChoice.BEST_FIT
    ) -> tuple[NodeBinding, ...] | None:
        """Where `demand` would go in this pool now, or None if it does not fit. Mutates nothing."""
        pool = self.catalog.pools[pool_index]
        if pool.elastic:
            return () if self._elastic_fits(pool_index, pool, demand) else None
        if demand.total_milli > self.free_milli(pool_index):
            return None
        if demand.single_node and demand.gpu_milli == FULL and demand.gpus > self.max_whole_gpus_on_a_node(pool_index):
            return None
        trial = _NodeTrial(self, pool_index)
        bindings: list[NodeBinding] = []
        used_nodes: set[int] = set()
        for _ in range(demand.replicas):
            placed = trial.place_replica(demand, choice, used_nodes if demand.spread else set())
            if placed is None:
                return None
            bindings.extend(placed)
            used_nodes.update(b.node for b in placed)
        return tuple(bindings)

    def take(self, pool_index: int, demand: Demand, bindings: Iterable[NodeBinding]) -> None:
        self._apply(pool_index, demand, bindings, sign=-1)

    def release(self, pool_index: int, demand: Demand, bindings: Iterable[NodeBinding]) -> None:
        self._apply(pool_index, demand, bindings, sign=+1)

    def place(
        self, pool_index: int, demand: Demand, choice: NodeChoice = NodeChoice.BEST_FIT
    ) -> tuple[NodeBinding, ...] | None:
        """find() then take(); None (and nothing changed) when it does not fit."""
        found = self.find(pool_index, demand, choice)
        if found is not None:
            self.take(pool_index, demand, found)
        return found

    def _elastic_fits(self, pool_index: int, pool: Pool, demand: Demand) -> bool:
        if demand.gpus > pool.gpus_per_node and demand.single_node:
            return False
        return demand.total_milli <= self.free_milli(pool_index)

    def _apply(self, pool_index: int, demand: Demand, bindings: Iterable[NodeBinding], sign: int) -> None:
        pool = self.catalog.pools[pool_index]
        site = self.catalog.site_index[pool.site]
        if pool.elastic:
            self.elastic_free[pool_index] += sign * demand.total_milli
            self.site_quota_free[site] += sign * demand.total_milli
            return
        g = self.gpu_free[pool_index]
        for b in bindings:
            for slot in b.gpu_slots:
                g[b.node, slot] += sign * b.gpu_milli
            self.cpu_free[pool_index][b.node] += sign * b.cpu_milli
            self.mem_free[pool_index][b.node] += sign * b.memory_mib


class _NodeTrial:
    """A scratch copy of one node-bound pool, to bind a multi-replica demand all-or-nothing."""

    def __init__(self, state: CapacityState, pool_index: int) -> None:
        self.gpu = state.gpu_free[pool_index].copy()
        self.cpu = state.cpu_free[pool_index].copy()
        self.mem = state.mem_free[pool_index].copy()
        self.gpus_per_node = state.catalog.pools[pool_index].gpus_per_node

    def place_replica(self, d: Demand, choice: NodeChoice, exclude: set[int]) -> list[NodeBinding] | None:
        if d.gpu_milli < FULL:
            return self._place_shared(d, choice, exclude)
        per_gpu_cpu = d.cpu_milli / d.gpus
        per_gpu_mem = d.memory_mib / d.gpus
        whole = (self.gpu == FULL).sum(axis=1)
        # GPUs each node can give, limited by its CPU and memory for this job's per-GPU needs.
        can = whole.copy()
        if per_gpu_cpu > 0:
            can = np.minimum(can, (self.cpu // per_gpu_cpu).astype(np.int64))
        if per_gpu_mem > 0:
            can = np.minimum(can, (self.mem // per_gpu_mem).astype(np.int64))
        if exclude:
            can[list(exclude)] = 0
        single = self._choose(can, d.gpus, choice)
        if single >= 0:
            nodes, takes = [single], [d.gpus]
        elif d.single_node:
            return None
        else:
            # Not a gang: spread over nodes, fullest-free first, so whole nodes are used before fragments.
            nodes, takes = [], []
            need = d.gpus
            for n in np.lexsort((np.arange(len(can)), -can)):
                if need == 0 or can[n] == 0:
                    break
                k = int(min(can[n], need))
                nodes.append(int(n))
                takes.append(k)
                need -= k
            if need:
                return None
        out = []
        for n, k in zip(nodes, takes, strict=True):
            slots = tuple(int(s) for s in np.flatnonzero(self.gpu[n] == FULL)[:k])
            cpu = round(per_gpu_cpu * k)
            mem = round(per_gpu_mem * k)
            self.gpu[n, list(slots)] = 0
            self.cpu[n] -= cpu
            self.mem[n] -= mem
            out.append(NodeBinding(n, slots, FULL, cpu, mem))
        return out

    def _place_shared(self, d: Demand, choice: NodeChoice, exclude: set[int]) -> list[NodeBinding] | None:
        fits = (self.gpu >= d.gpu_milli) & (self.cpu >= d.cpu_milli)[:, None] & (self.mem >= d.memory_mib)[:, None]
        if exclude:
            fits[list(exclude), :] = False
        if not fits.any():
            return None
        # Best fit: the slot with the least free milli that still fits (shared slots fill up first).
        free = np.where(fits, self.gpu, np.iinfo(np.int32).max if choice is not NodeChoice.WORST_FIT else -1)
        flat = int(free.argmax() if choice is NodeChoice.WORST_FIT else free.argmin())
        if choice is NodeChoice.FIRST_FIT:
            flat = int(np.flatnonzero(fits.ravel())[0])
        n, s = divmod(flat, self.gpu.shape[1])
        self.gpu[n, s] -= d.gpu_milli
        self.cpu[n] -= d.cpu_milli
        self.mem[n] -= d.memory_mib
        return [NodeBinding(n, (s,), d.gpu_milli, d.cpu_milli, d.memory_mib)]

    @staticmethod
    def _choose(can: npt.NDArray[np.int64], k: int, choice: NodeChoice) -> int:
        ok = np.flatnonzero(can >= k)
        if len(ok) == 0:
            return -1
        if choice is NodeChoice.FIRST_FIT:
            return int(ok[0])
        left = can[ok]
        pick = left.argmax() if choice is NodeChoice.WORST_FIT else left.argmin()
        return int(ok[pick])


def _cpu_milli(p: Pool) -> int:
    return round(p.cpus_per_node * 1000) if p.cpus_per_node > 0 else np.iinfo(np.int64).max // 4


def _mem_mib(p: Pool) -> int:
    return round(p.memory_gb_per_node * 1024) if p.memory_gb_per_node > 0 else np.iinfo(np.int64).max // 4
