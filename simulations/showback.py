"""Showback from a replay: spend split into compute, egress and storage, grouped by tag.

This is the one place the simulator attributes cost to tags. It takes the per-job cost rows
the metrics compute (actual runtime at the price each job got, plus its egress and storage),
so swapping it for the FinOps ledger's showback function (issue 7) is a change here only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

UNTAGGED = "(untagged)"


@dataclass(frozen=True, slots=True)
class CostRow:
    tags: Mapping[str, str]
    gpu_hours: float
    compute_usd: float
    egress_usd: float
    storage_usd: float

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.egress_usd + self.storage_usd


def cost_by_tag(rows: Iterable[CostRow], keys: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{tag key: {tag value: {jobs, gpu_hours, compute_usd, egress_usd, storage_usd, total_usd,
    usd_per_gpu_hour}}}; a job without the tag counts under '(untagged)'. Every key's groups add
    up to the same total as the rows."""
    out: dict[str, dict[str, dict[str, float]]] = {k: {} for k in keys}
    for row in rows:
        for key in keys:
            value = row.tags.get(key) or UNTAGGED
            acc = out[key].setdefault(
                value,
                {
                    "jobs": 0.0,
                    "gpu_hours": 0.0,
                    "compute_usd": 0.0,
                    "egress_usd": 0.0,
                    "storage_usd": 0.0,
                    "total_usd": 0.0,
                },
            )
            acc["jobs"] += 1
            acc["gpu_hours"] += row.gpu_hours
            acc["compute_usd"] += row.compute_usd
            acc["egress_usd"] += row.egress_usd
            acc["storage_usd"] += row.storage_usd
            acc["total_usd"] += row.total_usd
    for groups in out.values():
        for acc in groups.values():
            acc["usd_per_gpu_hour"] = acc["total_usd"] / acc["gpu_hours"] if acc["gpu_hours"] > 0 else 0.0
    return {k: dict(sorted(v.items(), key=lambda kv: -kv[1]["total_usd"])) for k, v in out.items()}
