"""The engine's clock: cycles on the interval grid, waits, and runtimes scaled by GPU speed."""

from __future__ import annotations

import pytest
import yaml

from simulations.engine import Simulation
from simulations.metrics import job_rows
from simulations.scenario import parse_scenario
from simulations.workload import build_workload
from tests.sim.conftest import DATA

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,524288,8,A100-80GB\n"


def scenario(tmp_path, jobs_csv: str, **sim):
    (tmp_path / "jobs.csv").write_text(jobs_csv)
    (tmp_path / "nodes.csv").write_text(NODES)
    raw = {
        "name": "tiny",
        "trace": {"kind": "generic", "jobs": "jobs.csv", "nodes": "nodes.csv", "gpu_model": "A100-80GB"},
        "catalog": {
            "base_sites": "none",
            "onprem": [{"name": "dc", "usd_per_gpu_hour": 1.0, "region": "us-west"}],
        },
        "simulation": {"interval_s": 60, "sample_s": 30, **sim},
        "report": {"plots": False},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    return parse_scenario(raw, str(tmp_path / "s.yaml"), tmp_path)


def test_cycles_on_the_grid_waits_and_speed_scaling(tmp_path):
    jobs = (
        "job_id,submit_time,duration_s,gpus,measured_on\n"
        "a,1000,100,8,\n"
        "b,1010,100,8,\n"
        "c,1010,50,8,H100-80GB\n"  # 50 s on an H100 (speed 2.2) is 110 s on the A100 it gets
    )
    wl = build_workload(scenario(tmp_path, jobs))
    result = Simulation(wl).run()
    rows = {r.trace_id: r for r in job_rows(wl, result)}
    a, b, c = rows["a"], rows["b"], rows["c"]
    assert (a.start_at, a.end_at) == (1000, 1100)  # cycle at the first arrival
    # b and c arrive at 1010, the node is full until 1100; the next cycle after that is at 1120
    assert (b.start_at, b.end_at, b.wait_s, b.jct_s) == (1120, 1220, 110, 210)
    assert (c.start_at, c.end_at, c.wait_s, c.jct_s) == (1240, 1350, 230, 340)
    assert c.held_s == pytest.approx(110.0)
    assert result.ended_at == 1360 and all(r.state == "succeeded" for r in rows.values())
    # 8 GPUs x $1/GPU-h for 100 + 100 + 110 s
    assert sum(r.compute_usd for r in rows.values()) == pytest.approx(8 * 310 / 3600)


def test_interval_zero_cycles_at_every_event(tmp_path):
    wl = build_workload(
        scenario(tmp_path, "job_id,submit_time,duration_s,gpus\na,1000,100,8\nb,1010,100,8\n", interval_s=0)
    )
    rows = {r.trace_id: r for r in job_rows(wl, Simulation(wl).run())}
    assert rows["b"].start_at == 1100 and rows["b"].wait_s == 90


def test_fragmentation_is_sampled_on_its_grid(tmp_path):
    jobs = "job_id,submit_time,duration_s,gpus,gpu_milli\na,1000,100,1,300\nb,1000,100,1,300\n"
    wl = build_workload(scenario(tmp_path, jobs))
    result = Simulation(wl).run()
    times = [s.at for s in result.samples]
    assert times == [1000 + 30 * k for k in range(len(times))] and times[-1] <= result.ended_at
    busy = [s for s in result.samples if 1000 < s.at <= 1060]
    # two 300-milli shares bin-packed on one GPU: 7.4 GPUs free; under a mix of 300-milli tasks the
    # 400 left on that GPU still fits one more, so nothing is fragmented
    assert busy and all(s.free_gpus == pytest.approx(7.4) and s.fragmented_gpus == pytest.approx(0.0) for s in busy)


def test_a_job_stuck_without_capacity_ends_the_run_unfinished(tmp_path):
    jobs = "job_id,submit_time,duration_s,gpus,single_node\na,1000,100,8,true\nb,1000,50,16,false\n"
    wl = build_workload(scenario(tmp_path, jobs, max_stall_s=7200))
    result = Simulation(wl).run()
    states = {r.trace_id: r.state for r in job_rows(wl, result)}
    # b needs 16 GPUs; the site has 8: it can never run and is rejected, a runs
    assert states == {"a": "succeeded", "b": "rejected"}


def test_philly_virtual_clusters_keep_their_jobs(tmp_path):
    """site_per_group: each VC is its own site; a VC's jobs run there or in the cloud, never in
    another VC; jobs of a VC without nodes go to the cloud (trace excerpts in tests/sim/data)."""
    raw = {
        "name": "vcs",
        "trace": {
            "kind": "philly",
            "jobs": str(DATA / "philly_jobs_excerpt.csv"),
            "nodes": str(DATA / "philly_vc_nodes_excerpt.csv"),
            "gpu_model": "P100",
        },
        "catalog": {
            "base_sites": ["aws-us-east-1"],
            "gpu_models": {"P100": {"speed": 0.22, "memory_gb": 16}},
            "onprem": [{"name": "philly", "site_per_group": True, "usd_per_gpu_hour": 0.05, "region": "us-east"}],
        },
        "report": {"plots": False},
    }
    wl = build_workload(parse_scenario(raw, str(tmp_path / "vcs.yaml"), tmp_path))
    assert wl.build.group_site == {"6214e9": "philly-6214e9", "7f04ca": "philly-7f04ca"}
    assert wl.catalog.total_gpus("philly-6214e9") == 64 * 8
    rows = job_rows(wl, Simulation(wl).run())
    groups = {j.trace_id: j for j in rows}
    specs = {a.spec.request_id: a.spec for a in wl.arrivals}
    assert {r.state for r in rows} == {"succeeded"}
    for trace_id, r in groups.items():
        assert r.site in specs[trace_id].allowed_sites  # never another VC's site
    on_own = [r for r in rows if r.site == "philly-6214e9"]
    assert on_own and all(specs[r.trace_id].allowed_sites[0] == "philly-6214e9" for r in on_own)
    orphans = [r for r in rows if "philly-6214e9" not in specs[r.trace_id].allowed_sites]
    assert orphans and all(r.site == "aws-us-east-1" for r in orphans)  # 11cb48, 6c71a0 have no nodes here
    assert any("may use cloud sites only" in n for n in wl.notes)
