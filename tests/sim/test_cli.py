"""`gravity simulate` / `gravity compare` through the argparse commands (in process)."""

from __future__ import annotations

import csv
import json

from simulations.cli import main
from tests.sim.conftest import SCENARIOS

EXAMPLE = str(SCENARIOS / "example_generic.yaml")


def test_simulate_writes_every_output(tmp_path, capsys):
    assert main(["simulate", EXAMPLE, "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "scenario example-generic" in text and "burst" in text and "deadlines" in text
    for name in (
        "report.json",
        "summary.csv",
        "jobs.csv",
        "costs_by_tag.csv",
        "utilisation.csv",
        "utilisation.png",
        "cost.png",
        "jct_wait_cdf.png",
        "fragmentation.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "report.json").read_text())
    with (tmp_path / "jobs.csv").open() as f:
        jobs = list(csv.DictReader(f))
    assert len(jobs) == report["jobs"]["replayed"] == 60
    total = sum(float(j["total_usd"]) for j in jobs)
    assert abs(total - report["cost"]["jobs_usd"]) < 1e-3
    with (tmp_path / "costs_by_tag.csv").open() as f:
        by_tag = [row for row in csv.DictReader(f) if row["tag"] == "cost_center"]
    assert abs(sum(float(r["total_usd"]) for r in by_tag) - report["cost"]["jobs_usd"]) < 1e-3


def test_simulate_json_and_bad_input(tmp_path, capsys):
    assert main(["simulate", EXAMPLE, "--no-plots", "--json", "--out", str(tmp_path), "--limit", "10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["jobs"]["replayed"] == 10
    assert main(["simulate", EXAMPLE, "--set", "scheduler.placer=nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "example_generic.yaml: scheduler.placer: unknown placer 'nope'" in err
    assert main(["simulate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_compare_placers_side_by_side(tmp_path, capsys):
    code = main(["compare", EXAMPLE, "--placers", "greedy,egress-blind", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0]
    assert "placer=greedy" in header and "placer=egress-blind" in header
    assert "total USD" in text and "egress USD" in text
    both = json.loads((tmp_path / "compare.json").read_text())
    greedy, blind = both["placer=greedy"], both["placer=egress-blind"]
    assert greedy["placer"] == "greedy" and blind["placer"] == "egress-blind"
    assert greedy["cost"]["egress_usd"] <= blind["cost"]["egress_usd"]  # data gravity pays
    assert (tmp_path / "placer=greedy" / "report.json").exists()


def test_compare_vary_a_what_if(tmp_path, capsys):
    code = main(
        [
            "compare",
            EXAMPLE,
            "--vary",
            "catalog.onprem.0.node_scale=0.5,2",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert code == 0
    reports = json.loads(capsys.readouterr().out)
    small, big = reports["node_scale=0.5"], reports["node_scale=2"]
    assert small["burst"]["share_of_gpu_hours"] > big["burst"]["share_of_gpu_hours"]
