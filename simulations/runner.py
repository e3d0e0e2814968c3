"""One scenario, start to finish: build the workload, replay it, measure, write the outputs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulations.engine import RunResult, Simulation
from simulations.metrics import JobRow
from simulations.progress import ProgressBar
from simulations.report import build_report, write_outputs
from simulations.scenario import Scenario
from simulations.workload import Workload, build_workload


@dataclass
class Outcome:
    report: dict[str, Any]
    rows: list[JobRow]
    workload: Workload
    result: RunResult
    written: list[Path]


def run_scenario(
    scenario: Scenario, *, progress: bool | None = None, write: bool = True, output_dir: Path | None = None
) -> Outcome:
    """Replay `scenario`; with `write`, put its outputs in `output_dir` (default: the scenario's)."""
    workload = build_workload(scenario)
    show = progress if progress is not None else scenario.spec.simulation.progress
    if show is None:
        show = sys.stderr.isatty()
    bar = ProgressBar(scenario.name) if show else None
    try:
        result = Simulation(workload, progress=bar).run()
    finally:
        if bar is not None:
            bar.close()
    report, rows = build_report(workload, result)
    written: list[Path] = []
    if write:
        spec = scenario.spec.report
        written = write_outputs(
            report, rows, output_dir or scenario.output_dir(), plots=spec.plots, jobs_csv=spec.jobs_csv
        )
    return Outcome(report, rows, workload, result, written)
