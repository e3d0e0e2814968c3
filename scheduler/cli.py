"""`gravity`: run the scheduler, and talk to it.

    gravity serve [--listen HOST:PORT] [--catalog PATH] [--placer NAME] [--store-url URL]
                  [--executor ray|sim] [--ray-address ADDR] [--config FILE.yaml]
    gravity submit FILE.yaml [FILE.yaml ...]     queue the job specs of the files (one call)
    gravity get ID                               one job in detail
    gravity list [--state S] [--site X] [--tag k=v] [--limit N] [--all]
    gravity cancel ID [--reason TEXT]
    gravity watch [ID]                           job events as they happen
    gravity explain ID | --file FILE.yaml        every candidate site with its cost and reasons
    gravity sites                                sites, pools, free GPUs and prices
    gravity cost [--by TAG] [--period 2026-11]   showback / chargeback (table, --format csv|json)
    gravity budget list|get|create|update|delete|watch   budgets per cost center or project, alerts
    gravity audit [--job ID] [--tag k=v] [--since T]     the decision audit trail
    gravity simulate SCENARIO.yaml               replay a trace scenario (simulations/cli.py)
    gravity compare SCENARIO.yaml ...            several placers or scenarios side by side
    gravity sweep SCENARIO.yaml --vary ...       a grid of scenario variants on Ray

Client commands take `--server HOST:PORT` (default $GRAVITY_SERVER or 127.0.0.1:50051) and
`--json` (protobuf JSON, field names as in the .proto, for scripts; `watch --json` writes one
event per line). Job files are YAML; see scheduler/api/jobfile.py and examples/jobs/.

Exit status: 0 done; 1 the server refused the request or cannot be reached; 2 bad usage, job
file or configuration; 3 `watch ID` saw the job end other than succeeded; 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from scheduler.api.jobfile import JobFileError, load_job_file

log = logging.getLogger("gravity")

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "GRAVITY_SERVER"
CONNECT_TIMEOUT_S = 3.0
RPC_TIMEOUT_S = 120.0
PAGE_SIZE = 1000  # ListJobs pages: the server's maximum

EXIT_OK = 0
EXIT_SERVER = 1  # the server refused the request, or cannot be reached
EXIT_USAGE = 2  # bad arguments, job file or configuration
EXIT_JOB_UNSUCCESSFUL = 3  # `watch ID`: the job ended failed, cancelled or rejected
EXIT_INTERRUPTED = 130

TERMINAL = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_REJECTED})
SERVICE = pb.DESCRIPTOR.services_by_name["Scheduler"].full_name
STATE_NAMES = ("pending", "placed", "running", "succeeded", "failed", "cancelled", "rejected")


class CliError(Exception):
    """Ends the command: `message` goes to stderr as `error: ...`, `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_SERVER) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ====================================================================== entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        return code
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except JobFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `gravity list | head`: the reader left; say nothing more
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    default_server = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    parser = argparse.ArgumentParser(
        prog="gravity",
        description="Gravity: hybrid on-prem / cloud GPU placement scheduler.",
        epilog="Exit status: 0 ok, 1 server error or unreachable, 2 bad usage/file/config, "
        "3 a watched job did not succeed.",
    )
    _client_flags(parser, default_server, suppress=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    # Client flags are accepted before or after the command; after wins.
    client = argparse.ArgumentParser(add_help=False)
    _client_flags(client, default_server, suppress=True)

    p = sub.add_parser("serve", help="run the scheduler service (gRPC)")
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--catalog", metavar="PATH", help="site catalog YAML, or 'default'")
    p.add_argument("--placer", metavar="NAME", help="placement policy (default greedy)")
    p.add_argument(
        "--store-url",
        "--redis-url",
        dest="store_url",
        metavar="URL",
        help="memory:// (this process only) or redis://host:port/db (durable, replicas; docs/durability.md)",
    )
    p.add_argument("--executor", choices=("ray", "sim"), help="run jobs on Ray, or simulate them")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray address (default: an embedded local Ray)")
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ...")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics here (0 = off)")
    p.add_argument("--config", metavar="FILE.yaml", help="settings file; flags override it")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("submit", parents=[client], help="submit the job specs of YAML files")
    p.add_argument("files", nargs="+", metavar="FILE.yaml", help="job file(s); - reads standard input")
    p.set_defaults(run=cmd_submit)

    p = sub.add_parser("get", parents=[client], help="show one job")
    p.add_argument("id", metavar="ID")
    p.set_defaults(run=cmd_get)

    p = sub.add_parser("list", parents=[client], help="list jobs, newest first")
    p.add_argument(
        "--state",
        action="append",
        type=_state_arg,
        default=[],
        metavar="STATE",
        help=f"only jobs in this state (repeat, or comma-separate): {', '.join(STATE_NAMES)}",
    )
    p.add_argument("--site", help="only jobs placed at this site")
    p.add_argument(
        "--tag",
        action="append",
        type=_tag_arg,
        default=[],
        metavar="KEY=VALUE",
        help="only jobs with this tag (repeatable: all must match)",
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N jobs (default 100)")
    p.add_argument("--all", action="store_true", help="follow page tokens: every matching job")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("cancel", parents=[client], help="cancel a job")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", default="", help="recorded with the cancellation")
    p.set_defaults(run=cmd_cancel)

    p = sub.add_parser("watch", parents=[client], help="stream job events (Ctrl-C stops)")
    p.add_argument("id", nargs="?", default="", metavar="ID", help="one job: its history, until it ends")
    p.add_argument("--from-start", action="store_true", help="all jobs: replay the retained history first")
    p.set_defaults(run=cmd_watch)

    p = sub.add_parser("explain", parents=[client], help="candidate sites for a job or a job file")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", metavar="ID", help="a submitted job")
    target.add_argument("--file", "-f", metavar="FILE.yaml", help="dry run of the spec(s) of a job file")
    p.add_argument("--all", action="store_true", help="also the spot candidates of a job that does not take spot")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser("sites", parents=[client], help="sites, pools, free GPUs and prices")
    p.set_defaults(run=cmd_sites)

    from scheduler.cli_finops import register  # cost, budget, audit (imported here: it imports this module)

    register(sub, [client])
    from simulations.cli import register as register_simulator_commands  # simulations imports the scheduler

    register_simulator_commands(sub)  # simulate, compare, sweep (simulations/cli.py)
    return parser


def _client_flags(parser: argparse.ArgumentParser, default_server: str, *, suppress: bool) -> None:
    """--server and --json; on the subcommands their defaults are suppressed so the top level's stand."""
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS if suppress else default_server,
        help=f"scheduler address (default ${SERVER_ENV}, else {DEFAULT_SERVER})"
        + (f"; now {default_server}" if default_server != DEFAULT_SERVER else ""),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="protobuf JSON instead of tables (proto field names; watch: one event per line)",
    )


def _state_arg(text: str) -> list[pb.JobState.ValueType]:
    out: list[pb.JobState.ValueType] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name = part.lower().removeprefix("job_state_")
        if name not in STATE_NAMES:
            raise argparse.ArgumentTypeError(f"unknown state {part!r} (one of {', '.join(STATE_NAMES)})")
        out.append(pb.JobState.Value(f"JOB_STATE_{name.upper()}"))
    return out


def _tag_arg(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# ====================================================================== serve


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: client commands need neither the scheduler nor its dependencies.
    from placers.catalog import CatalogError
    from scheduler.api.server import Server
    from scheduler.app import ConfigError, build_app
    from scheduler.settings import SettingsError, load_settings

    overrides = {
        "listen": args.listen,
        "catalog": args.catalog,
        "placer": args.placer,
        "store_url": args.store_url,
        "executor.kind": args.executor,
        "executor.ray_address": args.ray_address,
        "log_level": args.log_level,
        "metrics_port": args.metrics_port,
    }
    try:
        settings = load_settings(args.config, **overrides)
        level = logging.getLevelName(settings.log_level.upper())
        if not isinstance(level, int):
            raise SettingsError(f"log_level: unknown level {settings.log_level!r}")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        app = build_app(settings)
    except (ConfigError, SettingsError, CatalogError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        server = Server(app.service, settings.listen)
    except (OSError, RuntimeError) as exc:
        app.close()
        raise CliError(f"cannot listen on {settings.listen}: {exc}", EXIT_USAGE) from None

    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.service.start()
        server.start()
        host = settings.listen.rpartition(":")[0] or "0.0.0.0"
        log.info(
            "gravity listening on %s:%d (placer %s, executor %s, store %s, catalog %s: %d sites)",
            host,
            server.port,
            settings.placer,
            settings.executor.kind,
            settings.store_url,
            settings.catalog,
            len(app.catalog.sites),
        )
        freeze_every = settings.gc_freeze_s or 0.5
        while not stop.wait(freeze_every):
            if settings.gc_freeze_s:
                # Objects that outlived a cycle (jobs, events, placements) are long-lived and hold no
                # reference cycles: keep them out of the cyclic collector's full passes, which
                # otherwise pause every thread for ~150 ms per 100k jobs held.
                gc.freeze()
        log.info("%s received: stopping", signal.Signals(caught[0]).name if caught else "stop")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.stop()
        app.close()
    log.info("stopped")
    return EXIT_OK


# ====================================================================== client plumbing


@contextmanager
def connect(address: str) -> Iterator[pb_grpc.SchedulerStub]:
    """A stub for a server that answered within CONNECT_TIMEOUT_S; CliError naming the address if not.

    Reachability is a grpc.health.v1 check with wait_for_ready, so that an address nobody answers
    on fails within seconds while the requests themselves get RPC_TIMEOUT_S.
    """
    channel = grpc.insecure_channel(address)
    try:
        _check_reachable(channel, address)
        try:
            yield pb_grpc.SchedulerStub(channel)
        except grpc.RpcError as exc:
            raise CliError(_rpc_error_text(exc)) from None
    finally:
        channel.close()


def _check_reachable(channel: grpc.Channel, address: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    try:
        reply = health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE), wait_for_ready=True, timeout=CONNECT_TIMEOUT_S
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            raise CliError(
                f"cannot reach the Gravity server at {address} (no answer within {CONNECT_TIMEOUT_S:g} s); "
                f"is `gravity serve` running there? Set --server or ${SERVER_ENV}."
            ) from None
        return  # a server without health checks: the request itself will tell
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise CliError(f"the Gravity server at {address} is not serving ({status}); it may be shutting down")


def _rpc_error_text(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {details or '(no details)'}"


def _emit_json(message: Message, *, indent: int | None = 2) -> None:
    print(json.dumps(_to_dict(message), indent=indent), flush=indent is None)


def _to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# ====================================================================== client commands


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a submitted spec came from, to point an INVALID_ARGUMENT back at the file."""

    file: str
    index: int
    count: int

    def __str__(self) -> str:
        return self.file if self.count == 1 else f"{self.file}, spec {self.index + 1} of {self.count}"


def cmd_submit(args: argparse.Namespace) -> int:
    specs: list[pb.JobSpec] = []
    origins: list[_Origin] = []
    for path in args.files:  # every file is read before anything is sent: all or nothing
        found = load_job_file(path)
        specs.extend(found)
        origins.extend(_Origin(path, i, len(found)) for i in range(len(found)))
    with connect(args.server) as stub:
        try:
            if len(specs) == 1:
                one = stub.SubmitJob(pb.SubmitJobRequest(spec=specs[0]), timeout=RPC_TIMEOUT_S)
                reply = pb.SubmitJobsResponse(results=[one])
            else:
                reply = stub.SubmitJobs(pb.SubmitJobsRequest(specs=specs), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise CliError(_with_origin(_rpc_error_text(exc), origins)) from None
    if args.json:
        _emit_json(reply)
        return EXIT_OK
    rows = [
        [
            r.job.id,
            r.job.spec.name,
            _kind(r.job.spec.kind),
            str(r.job.spec.gpus),
            _state(r.job.state),
            "new" if r.created else "existing (same request_id)",
        ]
        for r in reply.results
    ]
    print(_table(["ID", "NAME", "KIND", "GPUS", "STATE", "SUBMISSION"], rows, right={3}))
    if len(rows) == 1:
        print(f"\n1 job submitted; follow it with: gravity watch {reply.results[0].job.id}")
    else:
        print(f"\n{len(rows)} jobs submitted; follow them with: gravity watch")
    return EXIT_OK


def _with_origin(text: str, origins: Sequence[_Origin]) -> str:
    """`INVALID_ARGUMENT: specs[3].gpus: ...` -> the same, plus which file (and spec) that was."""
    match = re.search(r"\bspecs\[(\d+)\]", text)
    if match and int(match.group(1)) < len(origins):
        return f"{text} [{origins[int(match.group(1))]}]"
    if len(origins) == 1 and re.search(r"\bspec\.", text):
        return f"{text} [{origins[0]}]"
    return text


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args.server) as stub:
        job = stub.GetJob(pb.GetJobRequest(id=args.id), timeout=RPC_TIMEOUT_S)
    if args.json:
        _emit_json(job)
    else:
        print(_job_detail(job))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    limit = None if args.all and args.limit is None else (args.limit or 100)
    states = sorted({s for group in args.state for s in group})
    jobs: list[pb.Job] = []
    token = ""
    with connect(args.server) as stub:
        while True:
            want = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(jobs))
            page = stub.ListJobs(
                pb.ListJobsRequest(
                    states=states, site=args.site or "", tags=args.tag, page_size=want, page_token=token
                ),
                timeout=RPC_TIMEOUT_S,
            )
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token or (limit is not None and len(jobs) >= limit):
                break
    if args.json:
        _emit_json(pb.ListJobsResponse(jobs=jobs, next_page_token=token))
        return EXIT_OK
    if not jobs:
        print("no jobs match", file=sys.stderr)
        return EXIT_OK
    rows = [
        [
            j.id,
            j.spec.name,
            _kind(j.spec.kind),
            _state(j.state),
            str(j.spec.gpus * max(1, j.spec.inference.replicas)),
            _where(j.placement) if j.HasField("placement") else "-",
            _usd(j.placement.cost.total_usd) if j.HasField("placement") else "-",
            _when(j.created_at),
            _clip(j.reason, 60),
        ]
        for j in jobs
    ]
    print(
        _table(["ID", "NAME", "KIND", "STATE", "GPUS", "SITE/POOL", "EST. $", "CREATED", "REASON"], rows, right={4, 6})
    )
    if token:
        print(f"(first {len(jobs)} shown; more match: --all, or a larger --limit)", file=sys.stderr)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with connect(args.server) as stub:
        job = stub.CancelJob(
            pb.CancelJobRequest(id=args.id, requested_by=_user(), reason=args.reason), timeout=RPC_TIMEOUT_S
        )
    if args.json:
        _emit_json(job)
    elif job.state != pb.JOB_STATE_CANCELLED:  # cancelling a job that has ended changes nothing
        print(f"{job.id} had already ended: {_state(job.state)}" + (f" ({job.reason})" if job.reason else ""))
    else:
        by = f" by {job.cancelled_by}" if job.cancelled_by else ""
        print(f"{job.id} cancelled{by}" + (f": {job.reason}" if job.reason else ""))
    return EXIT_OK


def _user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no such user in the password database (containers)
        return ""


def cmd_watch(args: argparse.Namespace) -> int:
    with connect(args.server) as stub:
        if args.id:
            job = stub.GetJob(pb.GetJobRequest(id=args.id), timeout=RPC_TIMEOUT_S)
            if job.state in TERMINAL:  # its events may no longer be retained: report and stop
                if args.json:  # the same shape as the stream's lines
                    _emit_json(pb.JobEvent(kind=_state(job.state), job=job, at=job.updated_at), indent=None)
                else:
                    print(
                        f"{job.id} {job.spec.name} already ended: {_state(job.state)}"
                        + (f" ({job.reason})" if job.reason else "")
                    )
                return _outcome(job.state)
        request = pb.WatchJobsRequest(job_id=args.id, from_start=bool(args.id) or args.from_start)
        stream = stub.WatchJobs(request)
        try:
            for event in stream:
                if args.json:
                    _emit_json(event, indent=None)
                else:
                    print(_event_line(event), flush=True)
                if args.id and event.job.state in TERMINAL:
                    return _outcome(event.job.state)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED if args.id else EXIT_OK
        finally:
            stream.cancel()
    raise CliError("UNAVAILABLE: the server ended the event stream")


def _outcome(state: pb.JobState.ValueType) -> int:
    return EXIT_OK if state == pb.JOB_STATE_SUCCEEDED else EXIT_JOB_UNSUCCESSFUL


def cmd_explain(args: argparse.Namespace) -> int:
    if args.file:
        specs = load_job_file(args.file)
        requests = [pb.ExplainPlacementRequest(spec=s) for s in specs]
    else:
        requests = [pb.ExplainPlacementRequest(job_id=args.id)]
    replies = []
    with connect(args.server) as stub:
        for i, request in enumerate(requests):
            try:
                replies.append(stub.ExplainPlacement(request, timeout=RPC_TIMEOUT_S))
            except grpc.RpcError as exc:
                origin = [_Origin(args.file, i, len(requests))] if args.file else []
                raise CliError(_with_origin(_rpc_error_text(exc), origin)) from None
        if not args.file and not args.json:
            requests[0].spec.CopyFrom(stub.GetJob(pb.GetJobRequest(id=args.id), timeout=RPC_TIMEOUT_S).spec)
    if args.json:
        if len(replies) == 1:
            _emit_json(replies[0])
        else:
            print(json.dumps([_to_dict(r) for r in replies], indent=2))
        return EXIT_OK
    for i, (request, reply) in enumerate(zip(requests, replies, strict=True)):
        if i:
            print()
        # Spot rows of a job that does not take spot only repeat "spot capacity not allowed".
        print(_explain_text(reply, request.spec.name, hide_spot=not (args.all or request.spec.spot_ok)))
    return EXIT_OK


def cmd_sites(args: argparse.Namespace) -> int:
    with connect(args.server) as stub:
        reply = stub.ListSites(pb.ListSitesRequest(), timeout=RPC_TIMEOUT_S)
    if args.json:
        _emit_json(reply)
        return EXIT_OK
    rows = []
    for s in reply.sites:
        for p in s.pools:
            notes = [n for n, on in (("dedicated", p.dedicated), ("elastic", p.elastic)) if on]
            rows.append(
                [
                    s.name,
                    s.kind,
                    s.jurisdiction,
                    s.region,
                    "up" if s.available else "DOWN",
                    p.name,
                    p.gpu_model,
                    f"{p.free_gpus:g}",
                    str(p.total_gpus),
                    f"{p.usd_per_gpu_hour:.2f}",
                    f"{p.spot_usd_per_gpu_hour:.2f}" if p.HasField("spot_usd_per_gpu_hour") else "-",
                    ",".join(notes) or "-",
                ]
            )
    headers = ["SITE", "KIND", "JUR", "REGION", "STATE", "POOL", "GPU", "FREE", "TOTAL", "$/GPU-H", "SPOT $", "NOTES"]
    print(_table(headers, rows, right={7, 8, 9, 10}))
    free = sum(s.free_gpus for s in reply.sites)
    total = sum(s.total_gpus for s in reply.sites)
    print(f"\n{len(reply.sites)} sites, {free:g} of {total} GPUs free")
    return EXIT_OK


# ====================================================================== rendering


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            if i in right:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell if last else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _kind(kind: pb.JobKind.ValueType) -> str:
    return pb.JobKind.Name(kind).removeprefix("JOB_KIND_").lower() if kind in pb.JobKind.values() else str(kind)


def _state(state: pb.JobState.ValueType) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower() if state in pb.JobState.values() else str(state)


def _when(t: Timestamp) -> str:
    if not t.seconds and not t.nanos:
        return "-"
    return time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(t.seconds))


def _usd(value: float) -> str:
    return f"{value:,.2f}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "0s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _where(p: pb.Placement) -> str:
    return f"{p.site}/{p.pool}" if p.pool else p.site


def _job_detail(j: pb.Job) -> str:
    s = j.spec
    lines: list[tuple[str, str]] = []

    def add(label: str, value: str) -> None:
        if value:
            lines.append((label, value))

    add("state", _state(j.state) + (f": {j.reason}" if j.reason else ""))
    shape = f"{_kind(s.kind)}, {s.gpus} GPU{'s' if s.gpus != 1 else ''}"
    if s.gpu_milli and s.gpu_milli < 1000:
        shape += f" at {s.gpu_milli / 1000:g} of a GPU"
    if s.single_node:
        shape += " on one node"
    if s.kind == pb.JOB_KIND_INFERENCE:
        inf = s.inference
        shape += f", {max(1, inf.replicas)} replica{'s' if inf.replicas > 1 else ''}"
        if inf.latency_slo_ms:
            shape += f", SLO {inf.latency_slo_ms:g} ms to {', '.join(inf.user_regions)}"
        if inf.dedicated:
            shape += ", dedicated"
    add("job", shape + f", priority {s.priority}")
    if s.gpu_models:
        add("gpu models", ", ".join(s.gpu_models))
    if s.runtime_s:
        add("runtime", f"{_duration(s.runtime_s)} (estimate on the reference GPU)")
    if s.HasField("deadline"):
        add("deadline", _when(s.deadline))
    datasets = [
        d.catalog_id if d.WhichOneof("source") == "catalog_id" else f"{d.inline.id} ({d.inline.size_gb:g} GB, inline)"
        for d in s.datasets
    ]
    add("datasets", ", ".join(datasets))
    add("tags", ", ".join(f"{k}={v}" for k, v in _tags(s.tags)))
    limits = []
    if s.allowed_jurisdictions:
        limits.append("jurisdictions " + ", ".join(s.allowed_jurisdictions))
    if s.allowed_sites:
        limits.append("sites " + ", ".join(s.allowed_sites))
    if s.HasField("max_cost_usd"):
        limits.append(f"max ${_usd(s.max_cost_usd)}")
    if s.spot_ok:
        limits.append("spot ok")
    add("limits", "; ".join(limits))
    add("entrypoint", s.entrypoint)
    if j.HasField("placement"):
        p = j.placement
        add("placement", f"{_where(p)} ({p.gpu_model}{', spot' if p.spot else ''})")
        c = p.cost
        add(
            "est. cost",
            f"${_usd(c.total_usd)} (compute {_usd(c.compute_usd)}, egress {_usd(c.egress_usd)}, "
            f"storage {_usd(c.storage_usd)})",
        )
        moves = [
            f"{m.dataset_id} {m.from_site} -> {m.to_site} ({m.size_gb:g} GB, {_duration(m.transfer_s)})"
            for m in p.data_moves
        ]
        add("data moves", "; ".join(moves) or ("none" if s.datasets else ""))
        add("est. start", _when(p.estimated_start))
        if p.HasField("estimated_completion"):
            add("est. finish", _when(p.estimated_completion))
        add("why here", p.explanation)
    add("created", _when(j.created_at))
    if j.HasField("started_at"):
        add("started", _when(j.started_at))
    if j.HasField("finished_at"):
        add("finished", _when(j.finished_at))
    if j.HasField("exit_code"):
        add("exit code", str(j.exit_code))
    if j.health:
        add("health", f"{j.health}, {j.replicas_ready}/{s.inference.replicas or 1} replicas ready")
    add("endpoint", j.endpoint)
    add("cancelled by", j.cancelled_by)
    for a in j.attempts:
        end = f", exit {a.exit_code}" if a.HasField("exit_code") else ""
        cause = f" ({a.cause})" if a.cause else ""
        add(f"attempt {a.number}", f"{a.site} {_state(a.state)} {_when(a.launched_at)}{end}{cause}")
    width = max(len(label) for label, _ in lines)
    out = [f"{j.id}  {s.name}"] + [f"  {label.ljust(width)}  {value}" for label, value in lines]
    if j.log_tail:
        out.append("  log tail:")
        out.extend(f"    | {line}" for line in j.log_tail.rstrip("\n").splitlines())
    return "\n".join(out)


def _tags(tags: pb.Tags) -> list[tuple[str, str]]:
    named = [(k, getattr(tags, k)) for k in ("project", "cost_center", "team", "workload_type", "stage")]
    return [(k, v) for k, v in named if v] + sorted(tags.extra.items())


def _event_line(e: pb.JobEvent) -> str:
    j = e.job
    at = time.strftime("%H:%M:%S", time.gmtime(e.at.seconds)) if e.HasField("at") else "--:--:--"
    parts = [at, f"#{e.seq}", e.kind.ljust(9), j.id, j.spec.name, _state(j.state)]
    if j.HasField("placement") and e.kind in ("placed", "running", "succeeded", "failed", "retrying"):
        parts.append(f"{_where(j.placement)} ${_usd(j.placement.cost.total_usd)}")
    if j.HasField("exit_code") and j.state in TERMINAL:
        parts.append(f"exit {j.exit_code}")
    if j.reason and e.kind not in ("submitted", "running"):
        parts.append(f"- {_clip(j.reason, 160)}")
    return "  ".join(parts)


def _explain_text(r: pb.ExplainPlacementResponse, name: str = "", *, hide_spot: bool = False) -> str:
    title = (f"job {r.job_id}" if r.job_id else "dry run") + (f" ({name})" if name else "")
    shown = [c for c in r.candidates if c.chosen or not (hide_spot and c.spot)]
    rows = []
    for c in shown:
        rows.append(
            [
                "*" if c.chosen else "",
                c.site,
                c.pool,
                c.gpu_model,
                "spot" if c.spot else "-",
                _usd(c.cost.compute_usd),
                _usd(c.cost.egress_usd),
                _usd(c.cost.storage_usd),
                _usd(c.cost.total_usd),
                _duration(c.transfer_s),
                _when(c.estimated_completion) if c.HasField("estimated_completion") else "-",
                "yes" if c.feasible else "no",
                "; ".join(c.reasons),
            ]
        )
    headers = [
        "",
        "SITE",
        "POOL",
        "GPU",
        "SPOT",
        "COMPUTE $",
        "EGRESS $",
        "STORAGE $",
        "TOTAL $",
        "TRANSFER",
        "EST. COMPLETION",
        "FEASIBLE",
        "REASONS",
    ]
    best = next((c for c in r.candidates if c.chosen), None)
    if best is not None:
        spot = ", spot" if best.spot else ""
        chosen = f"chosen {best.site}/{best.pool} ({best.gpu_model}{spot}) at ${_usd(best.cost.total_usd)}"
    else:
        chosen = f"chosen {r.chosen_site}" if r.chosen_site else "no site can take it now"
    feasible = sum(1 for c in r.candidates if c.feasible)
    hidden = len(r.candidates) - len(shown)
    note = [f"({hidden} spot candidates not shown: the job does not allow spot; --all shows them)"] if hidden else []
    return "\n".join(
        [
            f"{title}: {chosen}; {feasible} of {len(r.candidates)} candidates feasible",
            "",
            _table(headers, rows, right={5, 6, 7, 8, 9}),
            *note,
            "",
            f"summary: {r.summary}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
