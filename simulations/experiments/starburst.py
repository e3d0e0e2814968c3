"""Hybrid-cloud waiting policies of Luo et al., "Starburst" (USENIX ATC'24), on the Philly jobs.

    python -m simulations.experiments.starburst [--nodes 48] [--limit N] [--policies no-wait,constant,compute,deadline]

Starburst's question: a job that finds the private cluster full may run in the cloud now (and pay)
or wait for the cluster (and lose time). Its waiting policies, as implemented in Gravity's
scheduler (placers/waiting.py, selected by CycleSettings.wait_policy; the simulator adds none):

    no-wait    burst as soon as the cluster is full (Starburst's No-Wait)
    constant   wait up to 1 hour, then burst (Starburst's Constant-Wait; its artifact's constant-1)
    compute    wait up to 0.076 x GPUs x runtime, so big jobs wait longer (Starburst's Compute-Wait,
               its artifact's linear_cost-0.076 for Philly)
    deadline   Gravity's rule: wait only while the running jobs' expected completions free the cluster
               early enough to meet the job's deadline; otherwise burst now

Set-up, after Starburst's simulator: the Philly jobs (Pollux's 82k with known runtimes) in submit
order, a fixed private cluster of `--nodes` 8-GPU nodes of Philly's GPU, and a cloud that offers
the same GPU (jobs may only use that model) at $3.06/GPU-hour, without a quota. The cluster's own
GPU-hours are not billed here (its cost does not depend on the policy). Runtimes are known exactly.
Every job gets a deadline (submit + 2-4 x runtime) so Gravity's rule can act; the other policies
ignore deadlines, and deadline attainment is reported for all. Each run replays the jobs through
the production scheduler (greedy placer) in the simulator.

Reported: cloud cost, mean and median JCT, share of GPU-hours burst, deadline attainment, and the
change against No-Wait, beside Starburst's headline (54-91% less cloud cost than No-Wait for at most
5.8% higher average JCT, across its cluster sizes and traces).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.runner import run_scenario
from simulations.scenario import parse_scenario

PHILLY_NODES = 352
CLOUD_USD_PER_GPU_HOUR = 3.06  # AWS p3 (V100) list price per GPU-hour; only ratios matter here
POLICIES = ("no-wait", "constant", "compute", "deadline")


def default_traces() -> Path:
    import os

    here = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("GRAVITY_TRACES") or here.parent / "shared" / "traces")


def scenario_document(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    traces = Path(args.traces)
    regions = ["us-east", "us-west", "us-central", "eu-west", "eu-central", "ap-northeast"]
    trace: dict[str, Any] = {
        "kind": "philly",
        "jobs": str(traces / "philly" / "philly_jobs_pollux.csv"),
        "nodes": str(traces / "philly" / "philly_vc_nodes_helios.csv"),
        "gpu_model": "P100",
    }
    if args.limit:
        trace["limit"] = args.limit
    return {
        "name": f"starburst-{policy}",
        "seed": args.seed,
        "trace": trace,
        "catalog": {
            "base": "default",
            "base_sites": "none",
            "gpu_models": {"P100": {"speed": 0.22, "memory_gb": 16}},
            "onprem": [
                {
                    "name": "cluster",
                    "pools_by": "shape",
                    "gpus_per_node": 8,
                    "node_scale": args.nodes / PHILLY_NODES,
                    "usd_per_gpu_hour": 0.001,  # sunk: not what the policies trade against
                    "region": "us-east",
                }
            ],
            "sites": [
                {
                    "name": "cloud",
                    "kind": "cloud",
                    "provider": "aws",
                    "jurisdiction": "US",
                    "region": "us-east",
                    "burst_quota_gpus": 1_000_000,
                    "uplink_gbps": 25,
                    "storage_usd_per_gb_month": 0.023,
                    "egress": {"internet_usd_per_gb": 0.09},
                    "rtt_ms": dict.fromkeys(regions, 10),
                    "pools": [
                        {
                            "name": "p100",
                            "gpu_model": "P100",
                            "gpus_per_node": 8,
                            "usd_per_gpu_hour": CLOUD_USD_PER_GPU_HOUR,
                        }
                    ],
                }
            ],
        },
        "workload": {
            "same_gpu_model": True,
            "deadlines": {"fraction": 1.0, "slack_min": 2.0, "slack_max": 4.0},
        },
        "scheduler": {
            "placer": "greedy",
            "cycle": {
                "wait_policy": policy,
                "wait_fallback": "no-wait",
                "wait_constant_s": args.constant_s,
                "wait_factor": args.compute_factor,
            },
        },
        "simulation": {"interval_s": args.interval_s, "sample_s": 7 * 86400.0},
        "report": {"plots": False, "jobs_csv": False, "tags": []},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in args.policies.split(","):
        policy = name.strip()
        if policy not in POLICIES:
            raise SystemExit(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
        scenario = parse_scenario(scenario_document(policy, args), f"starburst[{policy}]", Path.cwd())
        outcome = run_scenario(scenario, progress=args.progress, write=False)
        r = outcome.report
        out[policy] = {
            "cloud_usd": r["cost"]["compute_cloud_usd"],
            "jct_mean_h": r["jct_s"]["mean"] / 3600,
            "jct_p50_h": r["jct_s"]["p50"] / 3600,
            "wait_mean_h": r["wait_s"]["mean"] / 3600,
            "burst_share": r["burst"]["share_of_gpu_hours"],
            "deadline_attainment": r["deadlines"]["attainment"],
            "jobs": r["jobs"]["replayed"],
            "unfinished": r["jobs"]["unfinished"],
            "rejected": r["jobs"]["rejected"],
            "wall_s": r["simulation"]["wall_s"],
        }
        print(f"  {policy:<9} done in {r['simulation']['wall_s']:.0f} s", file=sys.stderr)
    return out


def table(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    base = results.get("no-wait")
    lines = [
        f"Starburst waiting policies on Philly ({next(iter(results.values()))['jobs']:,} jobs), private cluster of "
        f"{args.nodes} x 8 GPUs, cloud ${CLOUD_USD_PER_GPU_HOUR}/GPU-h",
        f"{'policy':<10}{'cloud USD':>12}{'vs no-wait':>12}{'mean JCT h':>12}{'vs no-wait':>12}"
        f"{'p50 JCT h':>11}{'burst':>8}{'deadlines':>11}",
    ]
    for policy, r in results.items():
        d_cost = f"{100 * (r['cloud_usd'] / base['cloud_usd'] - 1):+.1f}%" if base and base["cloud_usd"] else "-"
        d_jct = f"{100 * (r['jct_mean_h'] / base['jct_mean_h'] - 1):+.1f}%" if base else "-"
        lines.append(
            f"{policy:<10}{r['cloud_usd']:>12,.0f}{d_cost:>12}{r['jct_mean_h']:>12.2f}{d_jct:>12}"
            f"{r['jct_p50_h']:>11.2f}{100 * r['burst_share']:>7.1f}%{100 * (r['deadline_attainment'] or 0):>10.1f}%"
        )
    lines.append("Starburst (paper): 54-91% less cloud cost than No-Wait, average JCT at most +5.8%.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m simulations.experiments.starburst", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--nodes", type=int, default=48, help="8-GPU nodes in the private cluster (Philly has 352)")
    p.add_argument("--limit", type=int, help="replay only the first N jobs")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--constant-s", type=float, default=3600.0, help="Constant-Wait's wait")
    p.add_argument("--compute-factor", type=float, default=0.076, help="Compute-Wait: wait = k x GPUs x runtime")
    p.add_argument("--interval-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--traces", default=str(default_traces()))
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    results = run(args)
    print("\n".join(table(results, args)))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
