"""Many scenario replays in parallel on Ray: a local Ray, or a Ray cluster at an address.

The only module of the simulator that imports ray. Each replay is one Ray task that receives the
scenario *document* (after overrides) and its base folder, replays it and returns its report
(a JSON-able dict); the driver writes every report and the comparison. Traces are read where
the task runs: on a cluster, they must be at the same path on every node (or the scenario's
${GRAVITY_TRACES} must point at them there). On a cluster, Gravity's own packages travel with the
tasks (runtime_env py_modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.report import write_outputs
from simulations.scenario import read_scenario_document


def _replay(document: Mapping[str, Any], source: str, base_dir: str) -> dict[str, Any]:
    """Runs inside a Ray worker: one replay, report only (nothing written there)."""
    from simulations.runner import run_scenario
    from simulations.scenario import parse_scenario

    scenario = parse_scenario(dict(document), source, Path(base_dir))
    return run_scenario(scenario, progress=False, write=False).report


def run_on_ray(
    grid: Sequence[tuple[str, str, Mapping[str, Any]]],
    *,
    address: str | None = None,
    workers: int | None = None,
    out: Path | None = None,
) -> list[dict[str, Any]]:
    """Replay every (label, scenario path, overrides) of `grid` on Ray; reports in grid order.

    `address` None starts a private local Ray (never joins another one on this machine) with
    `workers` CPUs; otherwise connects to that cluster. Reports are written under out/<label>/.
    """
    import ray

    import placers
    import scheduler
    import simulations
    from simulations.cli import safe_label
    from simulations.scenario import apply_overrides

    jobs = []
    for label, path, overrides in grid:
        p = Path(path).resolve()
        doc = apply_overrides(read_scenario_document(p), overrides)
        jobs.append((label, doc, str(p), str(p.parent)))
    if address is None:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, runtime_env={"py_modules": [placers, scheduler, simulations]}, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(_replay)
        refs = [task.remote(doc, source, base) for _, doc, source, base in jobs]
        reports: list[dict[str, Any]] = ray.get(refs)
    finally:
        ray.shutdown()
    if out is not None:
        for (label, doc, _, _), report in zip(jobs, reports, strict=True):
            plots = bool((doc.get("report") or {}).get("plots", False))
            write_outputs(report, None, out / safe_label(label), plots=plots, jobs_csv=False)
    return reports
