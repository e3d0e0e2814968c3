"""Alibaba GPU cluster trace v2023 "openb" (Weng et al., USENIX ATC'23; github.com/alibaba/clusterdata).

Nodes (`openb_node_list_*.csv`): `sn,cpu_milli,memory_mib,gpu,model`; `model` is one of G1, G2,
G3 (undisclosed), T4, P100, V100M16, V100M32, A10, or empty for a CPU-only node.

Pods (`openb_pod_list_*.csv`): `name,cpu_milli,memory_mib,num_gpu,gpu_milli` and, in all but the
`multigpu20` variant, `gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time`.
`gpu_milli` is the share of one GPU (1-1000) when `num_gpu` is 1, 1000 for multi-GPU pods and 0
for CPU-only pods; `gpu_spec` lists the allowed GPU models separated by `|` (empty = any).
Times are seconds from the trace start; `scheduled_time` is empty for pods that never ran.

`load_openb_pods` keeps every pod's shape (what the static-packing experiment samples);
`replay_jobs` turns pods that ran into jobs: submitted at `creation_time + epoch`, running for
`deletion_time - scheduled_time`. Pods that never ran, or ran for no time, are left out and
counted in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simulations.traces.base import (
    LoadReport,
    OnError,
    RowError,
    TraceError,
    TraceJob,
    TraceNode,
    fail_or_skip,
    read_rows,
)

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_OPTIONAL = ("gpu_spec", "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time")
GPU_MODELS = ("G1", "G2", "G3", "T4", "P100", "V100M16", "V100M32", "A10")
MAX_GPUS_PER_POD = 64


@dataclass(frozen=True, slots=True)
class OpenbPod:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per GPU; 0 for CPU-only pods
    gpu_spec: tuple[str, ...]
    qos: str
    creation_time: float | None
    deletion_time: float | None
    scheduled_time: float | None
    line: int


def load_openb_nodes(path: str | Path) -> list[TraceNode]:
    """Every node of the file; a bad row is an error naming its line."""
    path = Path(path)
    report = LoadReport(str(path))
    nodes: list[TraceNode] = []
    names: set[str] = set()
    for row in read_rows(path, NODE_COLUMNS, report):
        try:
            row.check()
            name = row.text("sn")
            gpus = row.integer("gpu", minimum=0, maximum=64)
            model = row.text("model", required=False)
            if gpus and not model:
                raise RowError(f"model: a node with {gpus} GPUs needs a GPU model")
            if model and not gpus:
                raise RowError(f"gpu: a {model} node needs at least one GPU")
            cpu = row.integer("cpu_milli", minimum=0)
            mem = row.integer("memory_mib", minimum=0)
        except RowError as exc:
            raise TraceError(str(path), row.line, str(exc)) from None
        if name in names:
            raise TraceError(str(path), row.line, f"sn: node {name!r} listed twice")
        names.add(name)
        nodes.append(TraceNode(name, gpus, model, cpu, mem))
    if not nodes:
        raise TraceError(str(path), 0, "no node rows")
    return nodes


def load_openb_pods(path: str | Path, *, on_error: OnError = "raise") -> tuple[list[OpenbPod], LoadReport]:
    path = Path(path)
    report = LoadReport(str(path))
    pods: list[OpenbPod] = []
    for row in read_rows(path, POD_COLUMNS, report, optional=POD_OPTIONAL):
        try:
            row.check()
            name = row.text("name")
            num_gpu = row.integer("num_gpu", minimum=0, maximum=MAX_GPUS_PER_POD)
            milli = row.integer("gpu_milli", minimum=0, maximum=1000)
            if num_gpu == 0 and milli != 0:
                raise RowError(f"gpu_milli: {milli} for a pod with no GPU (expected 0)")
            if num_gpu >= 1 and milli == 0:
                raise RowError("gpu_milli: a GPU pod needs a share of at least 1")
            if num_gpu > 1 and milli != 1000:
                raise RowError(f"gpu_milli: {milli} for a {num_gpu}-GPU pod (only a single GPU is shared)")
            spec = tuple(m.strip() for m in row.text("gpu_spec", required=False).split("|") if m.strip())
            for m in spec:
                if m not in GPU_MODELS:
                    raise RowError(f"gpu_spec: unknown GPU model {m!r}")
            times = [
                row.number(col, minimum=0) if row.values.get(col, "").strip() else None
                for col in ("creation_time", "deletion_time", "scheduled_time")
            ]
            created, deleted, scheduled = times
            if scheduled is not None and created is not None and scheduled < created:
                raise RowError(f"scheduled_time: {scheduled:g} is before creation_time {created:g}")
            if deleted is not None and scheduled is not None and deleted < scheduled:
                raise RowError(f"deletion_time: {deleted:g} is before scheduled_time {scheduled:g}")
            pod = OpenbPod(
                name=name,
                cpu_milli=row.integer("cpu_milli", minimum=0),
                memory_mib=row.integer("memory_mib", minimum=0),
                num_gpu=num_gpu,
                gpu_milli=milli,
                gpu_spec=spec,
                qos=row.text("qos", required=False),
                creation_time=created,
                deletion_time=deleted,
                scheduled_time=scheduled,
                line=row.line,
            )
        except RowError as exc:
            fail_or_skip(report, on_error, row.line, str(exc))
            continue
        pods.append(pod)
    report.loaded = len(pods)
    return pods, report


def replay_jobs(pods: list[OpenbPod], report: LoadReport, *, epoch: float = 0.0) -> list[TraceJob]:
    """Pods that ran, as jobs (GPU pods only: Gravity schedules GPU work); the rest are counted."""
    jobs: list[TraceJob] = []
    never_ran = cpu_only = zero = 0
    for p in pods:
        if p.num_gpu == 0:
            cpu_only += 1
            continue
        if p.scheduled_time is None or p.creation_time is None or p.deletion_time is None:
            never_ran += 1
            continue
        duration = p.deletion_time - p.scheduled_time
        if duration <= 0:
            zero += 1
            continue
        jobs.append(
            TraceJob(
                id=f"openb-{p.name}",
                submit_at=epoch + p.creation_time,
                duration_s=duration,
                gpus=p.num_gpu,
                gpu_milli=p.gpu_milli,
                gpu_models=p.gpu_spec,
                cpus=p.cpu_milli / 1000.0,
                memory_gb=p.memory_mib / 1024.0,
                group=p.qos,
                single_node=True,
                line=p.line,
            )
        )
    for n, what in ((cpu_only, "CPU-only pods"), (never_ran, "pods that never ran"), (zero, "pods that ran for 0 s")):
        if n:
            report.notes.append(f"{n} {what} left out of the replay")
    jobs.sort(key=lambda j: (j.submit_at, j.line))
    report.loaded = len(jobs)
    return jobs
