"""`gravity simulate`, `gravity compare` and `gravity sweep`.

    gravity simulate SCENARIO.yaml [--set PATH=VALUE ...] [--limit N] [--out DIR] [--no-plots] [--json]
    gravity compare  SCENARIO.yaml [SCENARIO.yaml ...] [--placers greedy,joint] [--vary PATH=V1,V2 ...]
                     [--set PATH=VALUE ...] [--limit N] [--out DIR] [--ray [ADDRESS]] [--json]
    gravity sweep    SCENARIO.yaml --vary PATH=V1,V2 [--vary ...] [--ray-address ADDR] [--workers N] ...

`--set` changes one field of the scenario (dotted path, YAML value: `--set scheduler.placer=joint`,
`--set what_if='[{forbid: {jurisdiction: EU}}]'`), validated like the file. `compare` replays every
combination of scenarios x placers x --vary values, on the same trace unless the scenarios name
different ones, and prints them side by side; `sweep` is the same grid run on Ray (a local Ray by
default, or the cluster at --ray-address), for planners who outgrow one machine.

`register(subparsers)` adds the three commands to an argparse CLI; each command's handler
returns the exit status: 0 done, 2 a bad scenario, trace or argument.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add `simulate`, `compare` and `sweep` to an argparse subparsers object."""
    p = subparsers.add_parser("simulate", help="replay a trace scenario through the scheduler (what-if planning)")
    p.add_argument("scenario", metavar="SCENARIO.yaml")
    _common(p)
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(run=cmd_simulate)

    p = subparsers.add_parser("compare", help="replay several placers or scenarios on the same trace, side by side")
    p.add_argument("scenarios", metavar="SCENARIO.yaml", nargs="+")
    _common(p)
    _grid(p)
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS", help="run the replays on Ray (local or ADDRESS)"
    )
    p.add_argument("--plots", action="store_true", help="also write each replay's PNG plots")
    p.set_defaults(run=cmd_compare)

    p = subparsers.add_parser("sweep", help="run a grid of scenario variants in parallel on Ray")
    p.add_argument("scenarios", metavar="SCENARIO.yaml", nargs="+")
    _common(p)
    _grid(p)
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--plots", action="store_true", help="also write each replay's PNG plots")
    p.set_defaults(run=cmd_sweep)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override one scenario field (dotted path, YAML value); repeatable",
    )
    p.add_argument("--limit", type=int, metavar="N", help="replay only the first N jobs (trace.limit)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: out/sim/<name>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def _grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--placers", metavar="A,B", help="replay with each of these placers")
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="replay with each value of a scenario field; repeatable (a grid)",
    )
    p.add_argument("--workers", type=int, metavar="N", help="replays in parallel on Ray (default: Ray's CPUs)")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from simulations.scenario import parse_override

    out = dict(parse_override(s) for s in args.sets)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError("--limit must be at least 1")
        out["trace.limit"] = args.limit
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulations.report import summary_lines
    from simulations.runner import run_scenario
    from simulations.scenario import ScenarioError, load_scenario
    from simulations.traces.base import TraceError

    try:
        overrides = _overrides(args)
        if args.no_plots:
            overrides["report.plots"] = False
        scenario = load_scenario(args.scenario, overrides)
        outcome = run_scenario(scenario, progress=args.progress, output_dir=Path(args.out) if args.out else None)
    except (ScenarioError, TraceError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        from simulations.report import SUMMARY_KEYS

        print(json.dumps({k: outcome.report[k] for k in SUMMARY_KEYS if k in outcome.report}, indent=1, default=str))
    else:
        print("\n".join(summary_lines(outcome.report)))
        if outcome.written:
            print(f"outputs   {outcome.written[0].parent}/ ({', '.join(p.name for p in outcome.written)})")
    return EXIT_OK


def variants(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, scenario path, overrides) for every combination the arguments ask for."""
    from simulations.scenario import parse_override

    base = _overrides(args)
    axes: list[list[tuple[str, Any]]] = []
    if args.placers:
        axes.append([("scheduler.placer", name.strip()) for name in args.placers.split(",") if name.strip()])
    for spec in args.vary:
        key, raw = parse_override(spec)
        values = raw if isinstance(raw, list) else [parse_override(f"{key}={v}")[1] for v in str(raw).split(",")]
        if not values:
            raise ValueError(f"--vary {spec!r}: no values")
        axes.append([(key, v) for v in values])
    out = []
    for path in args.scenarios:
        stem = Path(path).stem
        for combo in itertools.product(*axes) if axes else [()]:
            label = stem if len(args.scenarios) > 1 or not combo else ""
            parts = [f"{k.split('.')[-1]}={v}" for k, v in combo]
            label = "/".join(x for x in [label, ",".join(parts)] if x)
            out.append((label or stem, path, {**base, **dict(combo)}))
    labels = [v[0] for v in out]
    if len(set(labels)) != len(labels):
        raise ValueError("two replays would have the same label; vary different fields")
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    return _run_grid(args, ray_address=args.ray)


def cmd_sweep(args: argparse.Namespace) -> int:
    return _run_grid(args, ray_address=args.ray_address or "local")


def _run_grid(args: argparse.Namespace, ray_address: str | None) -> int:
    from simulations.report import SUMMARY_KEYS, compare_lines, write_comparison
    from simulations.scenario import ScenarioError, load_scenario
    from simulations.traces.base import TraceError

    try:
        grid = [(label, path, {**over, "report.plots": bool(args.plots)}) for label, path, over in variants(args)]
        scenarios = [load_scenario(path, over) for _, path, over in grid]  # validate all before running any
    except (ScenarioError, TraceError, ValueError) as exc:
        return _fail(str(exc))
    out = Path(args.out) if args.out else Path("out") / "compare" / scenarios[0].name
    labels = [label for label, _, _ in grid]
    try:
        if ray_address:
            from simulations.sweep import run_on_ray

            reports = run_on_ray(
                grid, address=None if ray_address == "local" else ray_address, workers=args.workers, out=out
            )
        else:
            from simulations.runner import run_scenario

            reports = [
                run_scenario(scenario, progress=args.progress, output_dir=out / safe_label(label)).report
                for label, scenario in zip(labels, scenarios, strict=True)
            ]
    except (ScenarioError, TraceError, ValueError) as exc:
        return _fail(str(exc))
    write_comparison(labels, reports, out)
    if args.json:
        print(
            json.dumps(
                {lbl: {k: r[k] for k in SUMMARY_KEYS if k in r} for lbl, r in zip(labels, reports, strict=True)},
                indent=1,
                default=str,
            )
        )
    else:
        traces = {json.dumps(r["scenario_document"].get("trace"), sort_keys=True) for r in reports}
        if len(traces) > 1:
            print("note: the replays read different traces")
        print("\n".join(compare_lines(labels, reports)))
        print(f"outputs   {out}/ (compare.json, compare.csv, one folder per replay)")
    return EXIT_OK


def safe_label(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in label)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m simulations ...`: the same commands without the rest of the gravity CLI."""
    parser = argparse.ArgumentParser(prog="python -m simulations", description="Gravity's trace simulator.")
    register(parser.add_subparsers(title="commands", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = args.run(args)
    return code
