"""Free capacity per pool, at node and GPU granularity where fragmentation is real.

On-prem pools are node-bound: each node has `gpus_per_node` GPU slots with free capacity in
milli-GPUs (1000 = a whole GPU, less when a slot is shared), plus free CPU and memory. A job
binds to concrete nodes and slots, so fragmentation is measured, not assumed away.

Cloud pools are elastic: each job gets its own instance, so only the GPU quota of the pool
and the burst quota of the site bound them.

`CapacityState` is a value: placers work on a copy (`copy()`), the store keeps the
committed one. Binding is deterministic: best-fit by default (fewest free GPUs that fit,
lowest node index on ties).

Node choice (`NodeChoice`) is the policy that picks a node among those that fit. The classic
three (best, worst, first fit) keep their behaviour; `RANDOM`, `BEST_FIT_CPU_GPU` and `FGD` are
the policies Weng et al. ("Beware of Fragmentation", USENIX ATC'23) compare, for demands that
fit on one node. `place_on_nodes` chooses among the nodes of several pools at once (a cluster of
heterogeneous node shapes), which is how the FGD static-packing experiment drives this binder.
A demand of 0 GPUs (CPU only) binds CPU and memory on a node and no GPU slot.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from placers.catalog import Catalog, Pool
from placers.domain import JobSpec, NodeBinding
from placers.fragmentation import FragmentationModel

FULL = 1000  # milli-GPUs in one GPU
BIG = np.iinfo(np.int64).max // 4  # "unbounded" CPU or memory of a pool that does not say


class NodeChoice(enum.StrEnum):
    """How a node is chosen among those that fit."""

    BEST_FIT = "best_fit"  # fewest free GPUs left after binding: keeps whole nodes free for gangs
    WORST_FIT = "worst_fit"  # most free GPUs: spreads load
    FIRST_FIT = "first_fit"
    RANDOM = "random"  # uniformly among the nodes that fit (needs a seeded rng)
    BEST_FIT_CPU_GPU = "best_fit_cpu_gpu"  # least CPU and GPU left, weighted 1:1 (Weng et al.'s BestFit)
    FGD = "fgd"  # least growth of fragmentation, ties to the fullest node (needs a FragmentationModel)


_CLASSIC = frozenset({NodeChoice.BEST_FIT, NodeChoice.WORST_FIT, NodeChoice.FIRST_FIT})

#: Choices that select whole nodes by a score over every node that fits (one-node demands).
SCORED = frozenset({NodeChoice.RANDOM, NodeChoice.BEST_FIT_CPU_GPU, NodeChoice.FGD})


class NodeChoiceError(ValueError):
    """A node choice used without what it needs (an rng for RANDOM, a model for FGD)."""


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
        """The demand of a spec. Jobs come in few shapes, so demands are shared (interned): a cycle
        asks for tens of thousands and building a frozen dataclass costs several times a lookup."""
        inf = spec.inference
        replicas, spread = (inf.replicas, inf.spread) if inf else (1, False)
        key = (spec.gpus, spec.gpu_milli, spec.cpus, spec.memory_gb, spec.single_node, replicas, spread)
        found = _DEMANDS.get(key)
        if found is None:
            if len(_DEMANDS) >= _DEMANDS_MAX:
                _DEMANDS.clear()
            found = _DEMANDS[key] = cls(
                gpus=spec.gpus,
                gpu_milli=spec.gpu_milli,
                cpu_milli=round(spec.cpus * 1000),
                memory_mib=round(spec.memory_gb * 1024),
                single_node=spec.single_node or spec.gpus == 1,
                replicas=replicas,
                spread=spread,
            )
        return found

    @property
    def total_milli(self) -> int:
        return self.gpus * self.gpu_milli * self.replicas


_DEMANDS: dict[tuple[object, ...], Demand] = {}
_DEMANDS_MAX = 4096


class CapacityState:
    """Free capacity of every pool of a catalog."""

    __slots__ = ("_flat", "catalog", "cpu_free", "elastic_free", "gpu_free", "mem_free", "site_quota_free")

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
        # Flattened views of groups of pools for place_on_nodes, kept current by _apply. Free
        # capacity must change only through take/release once a view exists.
        self._flat: dict[tuple[int, ...], _Flat] = {}

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
        # Elastic pools have empty node arrays: nothing in them can change, so they are shared.
        return CapacityState(
            self.catalog,
            [a.copy() if a.size else a for a in self.gpu_free],
            [a.copy() if a.size else a for a in self.cpu_free],
            [a.copy() if a.size else a for a in self.mem_free],
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

    def pool_summary(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For every pool at once: `free_milli` and `max_whole_gpus_on_a_node` (the same numbers)."""
        elastic, site_of, per_node = _pool_layout(self.catalog)
        free = np.minimum(self.elastic_free, self.site_quota_free[site_of])
        most = np.minimum(per_node, free // FULL)
        for i in np.flatnonzero(~elastic):
            g = self.gpu_free[i]
            free[i] = int(g.sum())
            most[i] = int((g == FULL).sum(axis=1).max()) if len(g) else 0
        return free, most

    def max_whole_gpus_on_a_node(self, pool_index: int) -> int:
        pool = self.catalog.pools[pool_index]
        if pool.elastic:
            return min(pool.gpus_per_node, self.free_milli(pool_index) // FULL)
        g = self.gpu_free[pool_index]
        return int((g == FULL).sum(axis=1).max()) if len(g) else 0

    # ----------------------------------------------------------------- binding

    def find(
        self,
        pool_index: int,
        demand: Demand,
        choice: NodeChoice = NodeChoice.BEST_FIT,
        *,
        rng: np.random.Generator | None = None,
        frag: FragmentationModel | None = None,
    ) -> tuple[NodeBinding, ...] | None:
        """Where `demand` would go in this pool now, or None if it does not fit. Mutates nothing."""
        pool = self.catalog.pools[pool_index]
        if pool.elastic:
            return () if self._elastic_fits(pool_index, pool, demand) else None
        if demand.total_milli > self.free_milli(pool_index):
            return None
        if (
            demand.replicas == 1
            and demand.single_node
            and demand.gpu_milli == FULL
            and demand.gpus > 0
            and demand.cpu_milli == 0
            and demand.memory_mib == 0
            and choice in _CLASSIC
        ):
            # Whole GPUs on one node, no CPU or memory asked: what _NodeTrial would bind, without a trial copy.
            g = self.gpu_free[pool_index]
            whole = (g == FULL).sum(axis=1)
            node = _NodeTrial._choose(whole, demand.gpus, choice)
            if node < 0:
                return None
            slots = tuple(int(x) for x in np.flatnonzero(g[node] == FULL)[: demand.gpus])
            return (NodeBinding(node, slots, FULL, 0, 0),)
        if demand.single_node and demand.gpu_milli == FULL and demand.gpus > self.max_whole_gpus_on_a_node(pool_index):
            return None
        trial = _NodeTrial(self, pool_index, rng, frag)
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
        self,
        pool_index: int,
        demand: Demand,
        choice: NodeChoice = NodeChoice.BEST_FIT,
        *,
        rng: np.random.Generator | None = None,
        frag: FragmentationModel | None = None,
    ) -> tuple[NodeBinding, ...] | None:
        """find() then take(); None (and nothing changed) when it does not fit."""
        found = self.find(pool_index, demand, choice, rng=rng, frag=frag)
        if found is not None:
            self.take(pool_index, demand, found)
        return found

    def place_on_nodes(
        self,
        pools: Sequence[int],
        demand: Demand,
        choice: NodeChoice = NodeChoice.BEST_FIT,
        *,
        rng: np.random.Generator | None = None,
        frag: FragmentationModel | None = None,
    ) -> tuple[int, tuple[NodeBinding, ...]] | None:
        """Bind a one-node demand to the node `choice` prefers among all nodes of `pools`.

        The pools are node-bound pools of one cluster (for example nodes grouped by shape); the
        choice compares nodes across them. Returns (pool index, bindings), or None when no node
        fits; nothing changes then. Demands that need several nodes go pool by pool instead.
        """
        bound = [p for p in pools if not self.catalog.pools[p].elastic]
        one_node = demand.replicas == 1 and (demand.gpus <= 1 or demand.single_node)
        if not one_node or not bound:
            for p in pools:
                found = self.place(p, demand, choice, rng=rng, frag=frag)
                if found is not None:
                    return p, found
            return None
        key = tuple(bound)
        flat = self._flat.get(key)
        if flat is None:
            flat = self._flat[key] = _Flat.of(
                [_View(self.gpu_free[p], self.cpu_free[p], self.mem_free[p], self.catalog.pools[p]) for p in bound], key
            )
        pick = _choose_node(flat, demand, choice, rng, frag, None)
        if pick is None:
            return None
        v, node, slot = pick
        binding = _binding(self.gpu_free[bound[v]], node, slot, demand)
        self.take(bound[v], demand, (binding,))
        return bound[v], (binding,)

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
        for flat in self._flat.values():
            flat.refresh(self, pool_index, bindings)


class _NodeTrial:
    """A scratch copy of one node-bound pool, to bind a multi-replica demand all-or-nothing."""

    def __init__(
        self,
        state: CapacityState,
        pool_index: int,
        rng: np.random.Generator | None = None,
        frag: FragmentationModel | None = None,
    ) -> None:
        self.gpu = state.gpu_free[pool_index].copy()
        self.cpu = state.cpu_free[pool_index].copy()
        self.mem = state.mem_free[pool_index].copy()
        self.pool = state.catalog.pools[pool_index]
        self.gpus_per_node = self.pool.gpus_per_node
        self.rng = rng
        self.frag = frag

    def place_replica(self, d: Demand, choice: NodeChoice, exclude: set[int]) -> list[NodeBinding] | None:
        if (choice in SCORED and (d.gpus <= 1 or d.single_node)) or d.gpus == 0:
            return self._place_scored(d, choice, exclude)
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

    def _place_scored(self, d: Demand, choice: NodeChoice, exclude: set[int]) -> list[NodeBinding] | None:
        flat = _Flat.of([_View(self.gpu, self.cpu, self.mem, self.pool)], ())
        pick = _choose_node(flat, d, choice, self.rng, self.frag, exclude)
        if pick is None:
            return None
        _, node, slot = pick
        binding = _binding(self.gpu, node, slot, d)
        for s in binding.gpu_slots:
            self.gpu[node, s] -= binding.gpu_milli
        self.cpu[node] -= binding.cpu_milli
        self.mem[node] -= binding.memory_mib
        return [binding]

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


_Layout = tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp], npt.NDArray[np.int64]]
_LAYOUT: dict[int, tuple[Catalog, _Layout]] = {}


def _pool_layout(catalog: Catalog) -> _Layout:
    """Per pool: elastic or not, its site's index, GPUs per node (worked out once per catalog)."""
    hit = _LAYOUT.get(id(catalog))
    if hit is None or hit[0] is not catalog:
        elastic = np.array([p.elastic for p in catalog.pools], dtype=bool)
        site_of = np.array([catalog.site_index[p.site] for p in catalog.pools], dtype=np.intp)
        per_node = np.array([p.gpus_per_node for p in catalog.pools], dtype=np.int64)
        if len(_LAYOUT) > 64:
            _LAYOUT.clear()
        hit = _LAYOUT[id(catalog)] = (catalog, (elastic, site_of, per_node))
    return hit[1]


def _cpu_milli(p: Pool) -> int:
    return round(p.cpus_per_node * 1000) if p.cpus_per_node > 0 else int(BIG)


def _mem_mib(p: Pool) -> int:
    return round(p.memory_gb_per_node * 1024) if p.memory_gb_per_node > 0 else int(BIG)


# --------------------------------------------------------------------------------------
# Choosing one node among the nodes of one or several pools (one-node demands).
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """The free capacity of one node-bound pool, as the chooser sees it."""

    gpu: npt.NDArray[np.int32]  # [nodes, gpus_per_node] free milli
    cpu: npt.NDArray[np.int64]  # [nodes]
    mem: npt.NDArray[np.int64]  # [nodes]
    pool: Pool


class _Flat:
    """The nodes of several pools as one table: free milli per GPU slot (padded with empty slots,
    which never fit and change no fragmentation term), CPU, memory, and where each row lives."""

    def __init__(self, views: Sequence[_View], pools: tuple[int, ...]) -> None:
        width = max(v.gpu.shape[1] for v in views)
        self.gpu = np.zeros((sum(len(v.cpu) for v in views), width), dtype=np.int64)
        sizes = [len(v.cpu) for v in views]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for v, a in zip(views, starts[:-1], strict=False):
            self.gpu[a : a + len(v.cpu), : v.gpu.shape[1]] = v.gpu
        self.cpu = np.concatenate([v.cpu for v in views]).astype(np.int64)
        self.mem = np.concatenate([v.mem for v in views]).astype(np.int64)
        self.owner = np.repeat(np.arange(len(views)), sizes)
        self.local = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, dtype=np.int64)
        self.models = [v.pool.gpu_model for v in views for _ in range(len(v.cpu))]
        self.cpu_known = np.concatenate([np.full(len(v.cpu), v.pool.cpus_per_node > 0) for v in views])
        self.max_cpu = max((round(v.pool.cpus_per_node * 1000) for v in views), default=0)
        self.max_gpu = max(v.pool.gpus_per_node for v in views) * FULL
        self.offset = {p: int(a) for p, a in zip(pools, starts[:-1], strict=False)}
        self._access: dict[int, tuple[FragmentationModel, npt.NDArray[np.bool_]]] = {}
        self._stats: dict[int, tuple[FragmentationModel, tuple[npt.NDArray[np.int64], ...]]] = {}

    @classmethod
    def of(cls, views: Sequence[_View], pools: tuple[int, ...]) -> _Flat:
        return cls(views, pools)

    def refresh(self, state: CapacityState, pool: int, bindings: Iterable[NodeBinding]) -> None:
        start = self.offset.get(pool)
        if start is None:
            return
        g, c, m = state.gpu_free[pool], state.cpu_free[pool], state.mem_free[pool]
        rows = []
        for b in bindings:
            row = start + b.node
            self.gpu[row, : g.shape[1]] = g[b.node]
            self.cpu[row] = c[b.node]
            self.mem[row] = m[b.node]
            rows.append(row)
        for frag, (ge, lt, total) in self._stats.values():
            ge[rows], lt[rows], total[rows] = frag.stats(self.gpu[rows])

    def frag_stats(self, frag: FragmentationModel) -> tuple[npt.NDArray[np.int64], ...]:
        """Every row's fragmentation statistics under `frag`, kept current by refresh."""
        hit = self._stats.get(id(frag))
        if hit is None or hit[0] is not frag:
            hit = self._stats[id(frag)] = (frag, frag.stats(self.gpu))
        return hit[1]

    def access(self, frag: FragmentationModel) -> npt.NDArray[np.bool_]:
        hit = self._access.get(id(frag))
        if hit is None or hit[0] is not frag:
            hit = self._access[id(frag)] = (frag, frag.mix.access(self.models))
        return hit[1]


def _binding(gpu: npt.NDArray[np.int32], node: int, slot: int, d: Demand) -> NodeBinding:
    """The binding of a one-node demand to `node` (`slot` for a shared GPU, whole free slots otherwise)."""
    if d.gpus == 0:
        return NodeBinding(node, (), 0, d.cpu_milli, d.memory_mib)
    if d.gpu_milli < FULL:
        return NodeBinding(node, (slot,), d.gpu_milli, d.cpu_milli, d.memory_mib)
    slots = tuple(int(s) for s in np.flatnonzero(gpu[node] == FULL)[: d.gpus])
    return NodeBinding(node, slots, FULL, d.cpu_milli, d.memory_mib)


def _choose_node(
    flat: _Flat,
    d: Demand,
    choice: NodeChoice,
    rng: np.random.Generator | None,
    frag: FragmentationModel | None,
    exclude: set[int] | None,
) -> tuple[int, int, int] | None:
    """(view, node, slot) that `choice` prefers for a one-node demand, or None if no node fits.

    `slot` is the GPU slot for a shared-GPU demand, else -1. Ties go to the lowest view, then
    node, then slot index, so every choice but RANDOM is a pure function of the state.
    """
    if choice is NodeChoice.RANDOM and rng is None:
        raise NodeChoiceError("node choice 'random' needs a seeded rng")
    if choice is NodeChoice.FGD and frag is None:
        raise NodeChoiceError("node choice 'fgd' needs a FragmentationModel (the typical task mix)")
    gpu, cpu, mem = flat.gpu, flat.cpu, flat.mem
    if len(cpu) == 0:
        return None
    owner, local = flat.owner, flat.local

    shared = d.gpus > 0 and d.gpu_milli < FULL
    fits: npt.NDArray[np.bool_] = (cpu >= d.cpu_milli) & (mem >= d.memory_mib)
    slot_fits = np.zeros((0, 0), dtype=bool)
    if shared:
        slot_fits = (gpu >= d.gpu_milli) & fits[:, None]
        fits = np.asarray(slot_fits.any(axis=1))
    elif d.gpus > 0:
        fits &= (gpu == FULL).sum(axis=1) >= d.gpus
    if exclude:
        fits[np.isin(local, sorted(exclude))] = False
    cand = np.flatnonzero(fits)
    if len(cand) == 0:
        return None

    if shared:
        # Candidate slots: every fitting slot (a slot is a different outcome for fragmentation).
        cn, cs = np.nonzero(slot_fits[cand])
        nodes, slots = cand[cn], cs
        free = gpu[nodes, slots]
        if choice is NodeChoice.FGD:
            assert frag is not None
            # Slots of a node with the same free share are the same outcome: score the first of each.
            _, first = np.unique(nodes * (FULL + 1) + free, return_index=True)
            first.sort()
            n_, f_ = nodes[first], free[first]
            ge, lt, total = flat.frag_stats(frag)
            growth = frag.growth_shared_from(
                ge[n_], lt[n_], total[n_], cpu[n_], flat.access(frag)[n_], f_, d.gpu_milli, d.cpu_milli
            )
            k = int(first[_least(growth, lambda i: _cpu_gpu_left(flat, n_[i], d))])
        elif choice is NodeChoice.RANDOM:
            assert rng is not None
            node = int(cand[rng.integers(len(cand))])  # a node uniformly, then its tightest slot
            mine = np.flatnonzero(nodes == node)
            k = int(mine[np.argmin(free[mine])])
        elif choice is NodeChoice.BEST_FIT_CPU_GPU:
            score = _cpu_gpu_left(flat, nodes, d)
            best = np.flatnonzero(score == score.min())
            k = int(best[np.argmin(free[best])])  # tightest slot on the best node
        elif choice is NodeChoice.FIRST_FIT:
            k = 0
        elif choice is NodeChoice.WORST_FIT:
            k = int(np.argmax(free))
        else:  # BEST_FIT: the tightest slot anywhere
            k = int(np.argmin(free))
        n = int(nodes[k])
        return int(owner[n]), int(local[n]), int(slots[k])

    if choice is NodeChoice.FGD:
        assert frag is not None
        ge, lt, total = flat.frag_stats(frag)
        stats = (ge[cand], lt[cand], total[cand], cpu[cand], flat.access(frag)[cand])
        if d.gpus == 0:
            growth = frag.growth_cpu_only_from(*stats, d.cpu_milli)
        else:
            growth = frag.growth_whole_from(*stats, d.gpus, d.cpu_milli)
        n = int(cand[_least(growth, lambda i: _cpu_gpu_left(flat, cand[i], d))])
    elif choice is NodeChoice.RANDOM:
        assert rng is not None
        n = int(cand[rng.integers(len(cand))])
    elif choice is NodeChoice.BEST_FIT_CPU_GPU:
        n = int(cand[int(np.argmin(_cpu_gpu_left(flat, cand, d)))])
    elif choice is NodeChoice.FIRST_FIT:
        n = int(cand[0])
    else:
        left = cpu[cand] if d.gpus == 0 else (gpu[cand] == FULL).sum(axis=1)
        n = int(cand[int(np.argmax(left) if choice is NodeChoice.WORST_FIT else np.argmin(left))])
    return int(owner[n]), int(local[n]), -1


def _least(
    score: npt.NDArray[np.float64], tie_break: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]]
) -> int:
    """Index of the least score; among equal scores (within 1e-9), the least `tie_break`, then the first."""
    ties = np.flatnonzero(score <= score.min() + 1e-9)
    if len(ties) == 1:
        return int(ties[0])
    return int(ties[int(np.argmin(tie_break(ties)))])


def _cpu_gpu_left(flat: _Flat, nodes: npt.NDArray[np.int64], d: Demand) -> npt.NDArray[np.float64]:
    """Weng et al.'s BestFit score (lower is better): CPU and GPU left after binding, each
    normalised by the largest node of the views, weighted 1:1. A pool that states no CPU size
    contributes no CPU term."""
    cpu_left = np.where(flat.cpu_known[nodes], flat.cpu[nodes] - d.cpu_milli, 0) / max(flat.max_cpu, 1)
    gpu_left = (flat.gpu[nodes].sum(axis=1) - d.gpus * d.gpu_milli) / flat.max_gpu
    out: npt.NDArray[np.float64] = 0.5 * cpu_left + 0.5 * gpu_left
    return out
