"""Simulator speed: replay all Philly jobs through the scheduler; one seed of the openb static packing.

    python benchmarks/bench_sim.py [--placers greedy,joint] [--limit N] [--packing-policies best_fit_cpu_gpu]

Targets (issue 6, on the reference machine): the 82k Philly jobs of philly_hybrid.yaml through the
production scheduler in at most 60 s with the greedy placer (the joint solver's time is reported);
one seed of the openb static packing in at most 10 s. Prints wall and CPU seconds; on a shared
machine CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from placers.registry import PLACERS  # noqa: E402
from simulations.experiments import fgd_packing  # noqa: E402
from simulations.runner import run_scenario  # noqa: E402
from simulations.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "simulations" / "scenarios" / "philly_hybrid.yaml"


def replay(placer: str, limit: int | None) -> None:
    overrides: dict[str, object] = {"scheduler.placer": placer, "report.plots": False}
    if limit:
        overrides["trace.limit"] = limit
    wall0, cpu0 = time.perf_counter(), time.process_time()
    outcome = run_scenario(load_scenario(SCENARIO, overrides), progress=False, write=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    r = outcome.report
    n = r["jobs"]["replayed"]
    print(
        f"philly_hybrid  placer {placer:<12} {n:,} jobs  wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
        f"({n / wall:,.0f} jobs/s)  cycles {r['simulation']['cycles']:,} "
        f"(in run_cycle {r['simulation']['cycle_wall_s']:.1f} s)  target <= 60 s"
    )


def packing(policies: str) -> None:
    args = argparse.Namespace(
        traces=str(fgd_packing.default_traces()),
        pods="default",
        with_memory=False,
        policies=policies,
        seeds=1,
        first_seed=42,
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fgd_packing.run(args)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for r in result["runs"]:
        print(
            f"openb packing  {r['policy']:<17} one seed  {r['wall_s']:6.1f} s  "
            f"(allocated {r['allocated_pct'][-1]:.2f}%)  target <= 10 s"
        )
    print(f"openb packing  total wall {wall:.1f} s, cpu {cpu:.1f} s (includes loading the trace)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--placers", default=",".join(x for x in ("greedy", "joint") if x in PLACERS))
    p.add_argument("--limit", type=int, help="replay only the first N jobs")
    p.add_argument("--packing-policies", default="best_fit_cpu_gpu,random")
    p.add_argument("--skip-replay", action="store_true")
    p.add_argument("--skip-packing", action="store_true")
    args = p.parse_args()
    if not args.skip_replay:
        for placer in args.placers.split(","):
            replay(placer.strip(), args.limit)
    if not args.skip_packing:
        packing(args.packing_policies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
