"""`gravity cost`, `gravity budget ...` and `gravity audit`: the FinOps commands of the CLI.

    gravity cost [--by TAG[,TAG]] [--period 2026-11] [--tag k=v] [--format table|csv|json] [-o FILE]
    gravity budget list | get ID | delete ID
    gravity budget create TAG=VALUE --amount-usd N [--on-breach reject|hold|alert] [--thresholds 50,80,100]
    gravity budget update TAG=VALUE [--amount-usd N] [--on-breach P] [--thresholds ...] [--expected-version N]
    gravity budget watch [--budget ID] [--from-start]           alerts as they fire
    gravity audit [--job ID] [--tag k=v] [--kind K] [--since T] [--until T] [--limit N | --all]

`register(subparsers, parents)` adds them to the `gravity` parser (scheduler.cli.build_parser);
`parents` supply --server and --json. Errors, exit statuses and tables as for the other commands.
The report's CSV and JSON are written by scheduler.finops.showback, as the simulator writes them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import grpc

from gravity.v1 import finops_pb2 as fpb
from gravity.v1 import finops_pb2_grpc as fpb_grpc
from scheduler.api import finops_convert as fc
from scheduler.api.convert import from_ts, ts
from scheduler.cli import (
    DEFAULT_SERVER,
    EXIT_OK,
    EXIT_USAGE,
    RPC_TIMEOUT_S,
    CliError,
    _check_reachable,
    _rpc_error_text,
    _table,
    _tag_arg,
    _to_dict,
)
from scheduler.finops.alerts import alert_to_json
from scheduler.finops.model import AuditKind, BreachPolicy
from scheduler.finops.showback import Showback, to_csv, to_dict

POLICIES = ("reject", "hold", "alert")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ====================================================================== registration


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add `cost`, `budget` and `audit` to a `gravity` subparsers object."""
    parents = list(parents)

    p = sub.add_parser("cost", parents=parents, help="showback / chargeback: spend by tag for a period")
    p.add_argument("--by", default="cost_center", metavar="TAG[,TAG]", help="tag(s) to group by (default cost_center)")
    p.add_argument("--period", default="", help="2026-11, 2026, 2026-11-05 or A..B (default: this month, UTC)")
    p.add_argument("--tag", action="append", type=_tag_arg, default=[], metavar="KEY=VALUE", help="only these jobs")
    p.add_argument("--format", choices=("table", "csv", "json"), default=None, help="output (default table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(run=cmd_cost)

    b = sub.add_parser("budget", help="budgets per cost center or project, and their alerts")
    bsub = b.add_subparsers(title="budget commands", metavar="COMMAND")
    b.set_defaults(run=lambda args: _usage(b))

    p = bsub.add_parser("list", parents=parents, help="budgets with this month's spend")
    p.set_defaults(run=cmd_budget_list)

    p = bsub.add_parser("get", parents=parents, help="one budget")
    p.add_argument("id", metavar="TAG=VALUE")
    p.set_defaults(run=cmd_budget_get)

    for name, helptext in (("create", "create a budget"), ("update", "change a budget (others unchanged)")):
        p = bsub.add_parser(name, parents=parents, help=helptext)
        p.add_argument("id", metavar="TAG=VALUE", type=_scope_arg, help="e.g. cost_center=cc-4411 or project=llm")
        p.add_argument("--amount-usd", type=_amount_arg, required=name == "create", metavar="USD", help="per month")
        p.add_argument("--on-breach", choices=POLICIES, default=None, help="reject, hold (default) or alert")
        p.add_argument("--thresholds", type=_thresholds_arg, metavar="PCT,...", help="alert at (default 50,80,100)")
        p.add_argument("--by", dest="requested_by", metavar="NAME", help="recorded in the audit trail")
        if name == "update":
            p.add_argument("--expected-version", type=int, default=0, metavar="N", help="fail if it changed since")
        p.set_defaults(run=cmd_budget_create if name == "create" else cmd_budget_update)

    p = bsub.add_parser("delete", parents=parents, help="delete a budget")
    p.add_argument("id", metavar="TAG=VALUE")
    p.add_argument("--expected-version", type=int, default=0, metavar="N")
    p.add_argument("--by", dest="requested_by", metavar="NAME", help="recorded in the audit trail")
    p.set_defaults(run=cmd_budget_delete)

    p = bsub.add_parser("watch", parents=parents, help="budget alerts as they fire (Ctrl-C stops)")
    p.add_argument("--budget", default="", metavar="TAG=VALUE", help="one budget's alerts")
    p.add_argument("--from-start", action="store_true", help="replay every recorded alert first")
    p.set_defaults(run=cmd_budget_watch)

    p = sub.add_parser("audit", parents=parents, help="the decision audit trail")
    p.add_argument("--job", default="", metavar="ID", help="one job's decisions")
    p.add_argument("--tag", action="append", type=_tag_arg, default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument(
        "--kind", action="append", choices=[k.value for k in AuditKind], default=[], help="only these (repeatable)"
    )
    p.add_argument("--since", type=_time_arg, metavar="TIME", help="ISO time (UTC) or an age such as 2h, 7d")
    p.add_argument("--until", type=_time_arg, metavar="TIME")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N entries (default 100)")
    p.add_argument("--all", action="store_true", help="every matching entry")
    p.set_defaults(run=cmd_audit)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# ====================================================================== argument types


def _scope_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected TAG=VALUE such as cost_center=cc-4411, got {text!r}")
    return key, value


def _amount_arg(text: str) -> float:
    try:
        value = float(text.replace(",", "").removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected USD, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _thresholds_arg(text: str) -> list[float]:
    out = []
    for part in filter(None, (p.strip().removesuffix("%") for p in text.split(","))):
        try:
            pct = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected percentages such as 50,80,100, got {text!r}") from None
        if not 0 < pct <= 1000:
            raise argparse.ArgumentTypeError(f"{part}%: a threshold is a percentage in (0, 1000]")
        out.append(pct / 100.0)
    if not out:
        raise argparse.ArgumentTypeError("give at least one percentage")
    return out


def _time_arg(text: str) -> float:
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age: 90s, 30m, 2h, 7d, 1w."""
    if m := _DURATION.match(text.strip()):
        return time.time() - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time (2026-11-05T10:00) or an age (2h), got {text!r}"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


# ====================================================================== plumbing


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[fpb_grpc.FinOpsStub]:
    """A FinOps stub for the server of --server; CliError naming the address when it cannot be reached."""
    address = getattr(args, "server", None) or DEFAULT_SERVER
    channel = grpc.insecure_channel(address)
    try:
        _check_reachable(channel, address)
        try:
            yield fpb_grpc.FinOpsStub(channel)
        except grpc.RpcError as exc:
            raise CliError(_rpc_error_text(exc)) from None
    finally:
        channel.close()


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def _requested_by(args: argparse.Namespace) -> str:
    if getattr(args, "requested_by", None):
        return str(args.requested_by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


# ====================================================================== cost


def cmd_cost(args: argparse.Namespace) -> int:
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    if not by:
        raise CliError("--by: name at least one tag", EXIT_USAGE)
    fmt = args.format or ("json" if _json(args) else "table")
    with connect(args) as stub:
        reply = stub.CostReport(fpb.CostReportRequest(by=by, period=args.period, tags=args.tag), timeout=RPC_TIMEOUT_S)
    report = fc.showback_from_proto(reply)
    if fmt == "csv":
        text = to_csv(report)
    elif fmt == "json":
        text = json.dumps(to_dict(report), indent=2) + "\n"
    else:
        text = render_report(report) + "\n"
    if args.output:
        newline = "" if fmt == "csv" else None  # the CSV carries its own \r\n
        with open(args.output, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
        print(f"wrote {args.output} ({len(report.rows)} rows, {report.period.label})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def render_report(r: Showback) -> str:
    as_of = "" if r.as_of >= r.period.end else f", as of {_when(r.as_of)} UTC"
    head = f"Spend by {', '.join(r.by)} for {r.period.label}{as_of}"
    if r.where:
        head += " (" + ", ".join(f"{k}={v}" for k, v in r.where.items()) + ")"
    cols = [*(k.upper() for k in r.by), "JOBS", "COMPUTE", "EGRESS", "STORAGE", "TOTAL", "GPU-H", "$/GPU-H", "$/JOB"]
    right = set(range(len(r.by), len(cols)))

    def cells(x: Any) -> list[str]:
        c = x.costs
        return [
            *x.group,
            str(x.jobs),
            _usd(c.compute_usd),
            _usd(c.egress_usd),
            _usd(c.storage_usd),
            _usd(c.total_usd),
            f"{c.gpu_hours:,.1f}",
            _usd(x.usd_per_gpu_hour),
            _usd(x.usd_per_job),
        ]

    lines = [head, "", _table(cols, [*(cells(x) for x in r.rows), cells(r.total)], right)]
    flagged = [(x.group, f) for x in r.rows for f in x.flags]
    if flagged:
        lines += ["", "Flags:"]
        lines += [f"  {'/'.join(g)}: {f}" for g, f in flagged]
    under = [p for p in r.pools if p.flagged]
    if under:
        lines += ["", "Fixed capacity used little this period (paid whether used or not):"]
        lines += [
            f"  {p.site}/{p.pool}{' (dedicated)' if p.dedicated else ''}: {p.utilisation:.0%} of "
            f"{p.capacity_gpu_hours:,.0f} GPU-h"
            for p in under
        ]
    if not r.rows:
        lines += ["", "no spend in this period"]
    return "\n".join(lines)


# ====================================================================== budgets


def _status_rows(statuses: Sequence[fpb.BudgetStatus]) -> str:
    rows = []
    for s in statuses:
        b = s.budget
        rows.append(
            [
                b.id,
                _usd(b.amount_usd),
                fc.POLICY_FROM_PB[b.on_breach].value,
                _usd(s.accrued.total_usd),
                _usd(s.committed_usd),
                _usd(s.remaining_usd),
                f"{s.spend_ratio:.0%}",
                ",".join(f"{t:.0%}" for t in b.thresholds),
                ",".join(f"{t:.0%}" for t in s.fired_thresholds) or "-",
                str(b.version),
            ]
        )
    period = statuses[0].period if statuses else ""
    head = ["BUDGET", "PER MONTH", "ON BREACH", "SPENT", "COMMITTED", "LEFT", "USED", "ALERTS AT", "FIRED", "VER"]
    return (f"Budgets for {period}\n\n" if period else "") + _table(head, rows, right={1, 3, 4, 5, 6, 9})


def cmd_budget_list(args: argparse.Namespace) -> int:
    with connect(args) as stub:
        reply = stub.ListBudgets(fpb.ListBudgetsRequest(), timeout=RPC_TIMEOUT_S)
    if _json(args):
        print(json.dumps(_to_dict(reply), indent=2))
    elif not reply.budgets:
        print("no budgets (create one: gravity budget create cost_center=cc-1 --amount-usd 5000)")
    else:
        print(_status_rows(reply.budgets))
    return EXIT_OK


def _print_status(args: argparse.Namespace, s: fpb.BudgetStatus) -> None:
    if _json(args):
        print(json.dumps(_to_dict(s), indent=2))
    else:
        print(_status_rows([s]))


def cmd_budget_get(args: argparse.Namespace) -> int:
    with connect(args) as stub:
        s = stub.GetBudget(fpb.GetBudgetRequest(id=args.id), timeout=RPC_TIMEOUT_S)
    _print_status(args, s)
    return EXIT_OK


def cmd_budget_create(args: argparse.Namespace) -> int:
    tag, value = args.id
    budget = fpb.Budget(
        tag=tag,
        value=value,
        amount_usd=args.amount_usd,
        on_breach=fc.POLICY_TO_PB[BreachPolicy(args.on_breach or "hold")],
        thresholds=args.thresholds or [],
    )
    with connect(args) as stub:
        s = stub.CreateBudget(
            fpb.CreateBudgetRequest(budget=budget, requested_by=_requested_by(args)), timeout=RPC_TIMEOUT_S
        )
    _print_status(args, s)
    return EXIT_OK


def cmd_budget_update(args: argparse.Namespace) -> int:
    tag, value = args.id
    with connect(args) as stub:
        current = stub.GetBudget(fpb.GetBudgetRequest(id=f"{tag}={value}"), timeout=RPC_TIMEOUT_S).budget
        if args.expected_version and current.version != args.expected_version:
            raise CliError(f"ABORTED: budget {current.id} is at version {current.version}, not {args.expected_version}")
        budget = fpb.Budget()
        budget.CopyFrom(current)
        budget.id = ""
        budget.ClearField("updated_at")
        if args.amount_usd is not None:
            budget.amount_usd = args.amount_usd
        if args.on_breach:
            budget.on_breach = fc.POLICY_TO_PB[BreachPolicy(args.on_breach)]
        if args.thresholds:
            del budget.thresholds[:]
            budget.thresholds.extend(args.thresholds)
        s = stub.UpdateBudget(
            fpb.UpdateBudgetRequest(budget=budget, expected_version=current.version, requested_by=_requested_by(args)),
            timeout=RPC_TIMEOUT_S,
        )
    _print_status(args, s)
    return EXIT_OK


def cmd_budget_delete(args: argparse.Namespace) -> int:
    with connect(args) as stub:
        b = stub.DeleteBudget(
            fpb.DeleteBudgetRequest(
                id=args.id, expected_version=args.expected_version, requested_by=_requested_by(args)
            ),
            timeout=RPC_TIMEOUT_S,
        )
    if _json(args):
        print(json.dumps(_to_dict(b), indent=2))
    else:
        print(f"deleted budget {b.id} (was {_usd(b.amount_usd)} per month, version {b.version})")
    return EXIT_OK


def cmd_budget_watch(args: argparse.Namespace) -> int:
    with connect(args) as stub:
        stream = stub.WatchAlerts(fpb.WatchAlertsRequest(budget_id=args.budget, from_start=args.from_start))
        try:
            for m in stream:
                alert = fc.alert_from_proto(m)
                if _json(args):
                    print(json.dumps(alert_to_json(alert)), flush=True)
                else:
                    print(f"{_when(alert.at)}  {alert.message}", flush=True)
        finally:
            stream.cancel()
    return EXIT_OK


# ====================================================================== audit


def cmd_audit(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit: must be at least 1", EXIT_USAGE)
    entries: list[fpb.AuditEntry] = []
    token = ""
    with connect(args) as stub:
        while True:
            want = 1000 if args.all else min(1000, args.limit - len(entries))
            request = fpb.QueryAuditRequest(
                job_id=args.job, tags=args.tag, kinds=args.kind, page_size=want, page_token=token
            )
            if args.since is not None:
                request.since.CopyFrom(ts(args.since))
            if args.until is not None:
                request.until.CopyFrom(ts(args.until))
            page = stub.QueryAudit(request, timeout=RPC_TIMEOUT_S)
            entries.extend(page.entries)
            token = page.next_page_token
            if not token or (not args.all and len(entries) >= args.limit):
                break
    if _json(args):
        print(json.dumps([_to_dict(e) for e in entries], indent=2))
        return EXIT_OK
    if not entries:
        print("no audit entries match")
        return EXIT_OK
    rows = [[str(e.seq), _when(from_ts(e.at)), e.kind, e.job_id or "-", e.actor, e.reason] for e in entries]
    print(_table(["SEQ", "TIME (UTC)", "KIND", "JOB", "BY", "REASON"], rows, right={0}))
    return EXIT_OK
