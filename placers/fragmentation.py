"""GPU fragmentation as Weng et al. define it ("Beware of Fragmentation", USENIX ATC'23).

Free GPU capacity is *fragmented* for a task when the task cannot use it. Given the mix of
tasks a cluster typically receives (each with a popularity `p`), the fragmentation of a node is
the expected amount of its free GPU capacity that an arriving task cannot use:

    F(node) = sum over typical tasks t of  p_t * frag_t(node)

    frag_t(node) = free GPU milli on slots with less than t's per-GPU share free,
                   when t fits on the node (enough such slots and enough free CPU);
                 = all free GPU milli of the node, when t does not fit there at all
                   (too few GPUs, too little CPU, or a GPU model t may not use).

The cluster's fragmentation is the sum over its nodes; dividing by the free GPU capacity gives
the fragmentation rate. The same measure drives the FGD node choice in `placers.capacity`
(place each task where fragmentation grows least) and the simulator's fragmentation report,
so the policy and the metric can never disagree.

Everything is vectorised over nodes: `gpu_free` is a [nodes, slots] matrix of free milli-GPU
per GPU slot (pad missing slots with 0: a slot with nothing free changes no term).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FULL = 1000

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TaskShape:
    """One kind of task: `gpus` GPUs at `gpu_milli` each (a share of one GPU when < 1000), and CPU."""

    gpus: int
    gpu_milli: int
    cpu_milli: int = 0
    gpu_models: tuple[str, ...] = ()  # empty = any model


@dataclass(frozen=True)
class TaskMix:
    """The typical tasks and their popularity (summing to 1). Built once per workload."""

    shapes: tuple[TaskShape, ...]
    popularity: F64  # [tasks]

    def __post_init__(self) -> None:
        if len(self.shapes) == 0:
            raise ValueError("a task mix needs at least one task shape")
        if len(self.popularity) != len(self.shapes):
            raise ValueError("one popularity per task shape")
        if np.any(self.popularity < 0) or not np.isclose(self.popularity.sum(), 1.0):
            raise ValueError("popularities must be >= 0 and sum to 1")
        for s in self.shapes:
            if s.gpus == 0 and s.gpu_milli == 0:
                continue  # a CPU-only task: it can use no free GPU capacity at all
            if s.gpus < 1 or not 1 <= s.gpu_milli <= FULL:
                raise ValueError("a task shape needs gpus >= 1 and 1 <= gpu_milli <= 1000, or gpus = gpu_milli = 0")

    @classmethod
    def from_shapes(
        cls, shapes: Sequence[TaskShape], coverage: float = 0.95, step: int = 1, *, include_cpu: bool = True
    ) -> TaskMix:
        """The most popular task shapes, `step` at a time, until they cover `coverage` of the tasks.

        The defaults are those of the FGD artifact's experiments (95% of the tasks, one shape at a
        time, CPU-only tasks included); the chosen shapes' popularities are renormalised to sum to
        1; ties are broken by shape, for determinism.
        """
        counts = Counter(s for s in shapes if s.gpus >= 1 or (include_cpu and s.gpus == 0))
        if not any(s.gpus >= 1 for s in counts):
            raise ValueError("no GPU task among the shapes")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].cpu_milli, kv[0].gpu_milli, kv[0].gpus))
        total = sum(counts.values())
        chosen: list[tuple[TaskShape, int]] = []
        covered = 0
        while covered < coverage * total and len(chosen) < len(ranked):
            for shape, n in ranked[len(chosen) : len(chosen) + step]:
                chosen.append((shape, n))
                covered += n
        pop = np.array([n for _, n in chosen], dtype=np.float64)
        return cls(tuple(s for s, _ in chosen), pop / pop.sum())

    @property
    def thresholds(self) -> I64:
        """The distinct per-GPU shares the mix asks for, ascending."""
        return np.unique(np.array([s.gpu_milli for s in self.shapes], dtype=np.int64))

    def access(self, node_models: Sequence[str]) -> B:
        """[nodes, tasks]: may task t use the GPUs of each node (its model allowed)?"""
        out = np.ones((len(node_models), len(self.shapes)), dtype=bool)
        for t, s in enumerate(self.shapes):
            if s.gpu_models:
                out[:, t] = [m in s.gpu_models for m in node_models]
        return out


class FragmentationModel:
    """Vectorised fragmentation of nodes under a task mix (see the module docstring)."""

    def __init__(self, mix: TaskMix) -> None:
        self.mix = mix
        gpu_tasks = [t for t, s in enumerate(mix.shapes) if s.gpus >= 1]
        self._gpu_tasks = np.array(gpu_tasks, dtype=np.int64)
        shapes = [mix.shapes[t] for t in gpu_tasks]
        self.u = np.unique(np.array([s.gpu_milli for s in shapes], dtype=np.int64))  # [U]
        self._task_u = np.searchsorted(self.u, [s.gpu_milli for s in shapes])  # [T] column of u
        self._task_k = np.array([s.gpus for s in shapes], dtype=np.int64)  # [T]
        self._task_c = np.array([s.cpu_milli for s in shapes], dtype=np.int64)  # [T]
        self._p = mix.popularity[self._gpu_tasks]  # [T]
        # CPU-only tasks can use none of a node's free GPU capacity: all of it is fragmented for them.
        self._cpu_share = float(mix.popularity.sum() - self._p.sum())

    # ---------------------------------------------------------------- per-node statistics

    def stats(self, gpu_free: I64) -> tuple[I64, I64, I64]:
        """Per node: slots with at least u free [N, U], free milli on slots below u [N, U], total free [N]."""
        g = gpu_free[:, :, None]
        below = g < self.u[None, None, :]
        ge = (~below).sum(axis=1)
        lt = np.where(below, g, 0).sum(axis=1)
        return ge, lt, gpu_free.sum(axis=1)

    def from_stats(self, ge: I64, lt: I64, total: I64, cpu_free: I64, access: B) -> F64:
        """F for nodes (or candidate placements) given their statistics; leading dims broadcast.
        `access` is [..., tasks of the mix] (mix.access)."""
        ge_t = ge[..., self._task_u]  # [..., T]
        lt_t = lt[..., self._task_u]
        fits = (ge_t >= self._task_k) & (cpu_free[..., None] >= self._task_c) & access[..., self._gpu_tasks]
        frag = np.where(fits, lt_t, total[..., None])
        out: F64 = frag @ self._p + self._cpu_share * total
        return out

    def node_fragmentation(self, gpu_free: I64, cpu_free: I64, access: B) -> F64:
        """[N] expected fragmented milli-GPU of each node."""
        ge, lt, total = self.stats(gpu_free)
        return self.from_stats(ge, lt, total, cpu_free, access)

    # ---------------------------------------------------------------- growth from one placement

    def growth_whole(self, gpu_free: I64, cpu_free: I64, access: B, gpus: int, cpu_milli: int) -> F64:
        """[N] change of F if a task of `gpus` whole GPUs and `cpu_milli` lands on each node."""
        return self.growth_whole_from(*self.stats(gpu_free), cpu_free, access, gpus, cpu_milli)

    def growth_whole_from(
        self, ge: I64, lt: I64, total: I64, cpu_free: I64, access: B, gpus: int, cpu_milli: int
    ) -> F64:
        """growth_whole from the nodes' statistics. Whole GPUs come from fully free slots: each
        threshold loses `gpus` slots at or above it, no slot drops below one, the total falls by
        1000 per GPU."""
        before = self.from_stats(ge, lt, total, cpu_free, access)
        after = self.from_stats(ge - gpus, lt, total - gpus * FULL, cpu_free - cpu_milli, access)
        out: F64 = after - before
        return out

    def growth_cpu_only(self, gpu_free: I64, cpu_free: I64, access: B, cpu_milli: int) -> F64:
        """[N] change of F if a task using only `cpu_milli` lands on each node."""
        return self.growth_cpu_only_from(*self.stats(gpu_free), cpu_free, access, cpu_milli)

    def growth_cpu_only_from(self, ge: I64, lt: I64, total: I64, cpu_free: I64, access: B, cpu_milli: int) -> F64:
        before = self.from_stats(ge, lt, total, cpu_free, access)
        after = self.from_stats(ge, lt, total, cpu_free - cpu_milli, access)
        out: F64 = after - before
        return out

    def growth_shared(
        self, gpu_free: I64, cpu_free: I64, access: B, nodes: I64, slots: I64, gpu_milli: int, cpu_milli: int
    ) -> F64:
        """[C] change of F if a `gpu_milli` share goes to slot `slots[c]` of node `nodes[c]`."""
        ge, lt, total = self.stats(gpu_free)
        stats = (ge[nodes], lt[nodes], total[nodes], cpu_free[nodes], access[nodes])
        return self.growth_shared_from(*stats, gpu_free[nodes, slots], gpu_milli, cpu_milli)

    def growth_shared_from(
        self, ge: I64, lt: I64, total: I64, cpu_free: I64, access: B, slot_free: I64, gpu_milli: int, cpu_milli: int
    ) -> F64:
        """growth_shared from the candidates' node statistics and the free milli of their slot."""
        f = slot_free[:, None]  # [C, 1]
        u = self.u[None, :]
        crosses = (f >= u) & (f - gpu_milli < u)  # the slot falls below this threshold
        already = f < u  # the slot was below it already: what is left there shrinks
        before = self.from_stats(ge, lt, total, cpu_free, access)
        after = self.from_stats(
            ge - crosses,
            lt + np.where(crosses, f - gpu_milli, 0) - np.where(already, gpu_milli, 0),
            total - gpu_milli,
            cpu_free - cpu_milli,
            access,
        )
        out: F64 = after - before
        return out
