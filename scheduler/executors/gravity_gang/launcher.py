"""Gravity's gang launcher: the Ray job entrypoint of every Gravity launch (`python -m gravity_gang`).

It runs as the Ray job's driver on the site's cluster and

1. reserves the whole gang as ONE placement group (one bundle per rank, the plan's strategy:
   STRICT_PACK for GPUs that must share a node, PACK for a job spanning nodes, STRICT_SPREAD for
   service replicas on distinct nodes). Ray reserves a placement group atomically, so the gang is
   held all or nothing; if it is not ready within `ready_timeout_s` the group is removed and the
   attempt ends with a CAUSE line (`unplaceable`): no rank ever started, nothing stays held;
2. starts one `Rank` actor per bundle, holding exactly the bundle's GPUs (Ray sets
   CUDA_VISIBLE_DEVICES in the actor from its assigned GPUs), and in it the user's command as a
   child process with GRAVITY_REPLICA, GRAVITY_RANK, GRAVITY_WORLD_SIZE, GRAVITY_MASTER_ADDR and
   GRAVITY_PORT (a free port on the rank's node) added to the job's environment;
3. batch / training (one group): relays every rank's output to its own stdout (the job log; ranks
   are prefixed "[rank i] " when there are several) and exits with the first non-zero exit status
   of a rank (128+N for a signal) after stopping the others, or 0 when all succeed. A rank whose Ray
   worker or node dies ends the attempt with a CAUSE line (`worker_died`): the scheduler retries it;
4. services (`plan.service`): never ends by itself. A replica whose command exits or whose worker
   dies is restarted in the SAME bundle after a backoff (1 s doubling to 30 s, reset after a minute
   up), so the reservation holds for as long as the service lives; replica output goes to each rank
   actor's own worker log, and the driver log carries HEALTH lines (state, replicas ready, endpoints
   node_ip:GRAVITY_PORT, restarts) on every change and every `health_every_s`.

SIGTERM (Ray's stop_job) stops every rank's command (SIGTERM to its process group, SIGKILL after a
grace period), removes the placement group and exits. If the launcher is killed outright, Ray kills
the job's actors with it; when a rank's actor process dies, its command's whole process group is
killed too (PDEATHSIG and a watchdog process, see _WRAPPER): no orphans keep GPUs busy.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .protocol import (
    EXIT_LAUNCHER,
    PLAN_ENV,
    CauseKind,
    GangPlan,
    Health,
    HealthState,
    LineKind,
    RankSpec,
    line,
)

STOP_GRACE_S = 1.5  # Ray's stop_job waits about 3 s before SIGKILL: stop the ranks within it
RPC_TIMEOUT_S = 60.0
STABLE_AFTER_S = 60.0  # a replica up this long has its restart backoff reset
_PR_SET_PDEATHSIG = 1
# The rank's command runs as the leader of its own process group G, beside a watchdog in G. The
# command's shell gets SIGKILL when the rank's actor process dies (PDEATHSIG, and Ray kills a dead
# worker's children too); the watchdog gets SIGUSR1 when the command's shell ends, however it ends,
# and SIGKILLs G, so neither a dead worker nor a finished command leaves processes behind. The
# watchdog ignores SIGTERM, so a stop's SIGTERM to G still gives the command its grace period.
_WRAPPER = '"$2" -I -S -c "$3" $$ </dev/null >/dev/null 2>&1 & exec /bin/sh -c "$1"'
_WATCHDOG = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, lambda *_: os.killpg(0, signal.SIGKILL))
ctypes.CDLL(None).prctl(1, int(signal.SIGUSR1), 0, 0, 0)
if os.getppid() != parent:
    os.killpg(0, signal.SIGKILL)
while True:
    signal.pause()
"""


def _child_setup() -> Callable[[], None]:
    """Run in the rank's child before exec: default signal handling (Ray's worker threads block and
    ignore some signals, and a shell cannot trap a signal ignored on entry), and on Linux SIGKILL when
    the actor process dies."""
    prctl: Callable[..., int] | None = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return setup


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def exit_status(code: int) -> int:
    """A child's return code as a shell reports it: 128+N when killed by signal N."""
    return 128 - code if code < 0 else code


class Rank:
    """One rank: runs the command as a child process in its own session and buffers its output.

    The child is spawned by a thread that lives until the child ends, so PDEATHSIG (which is tied
    to the spawning thread) fires only when this process dies."""

    def __init__(self, relay: bool) -> None:
        self.relay = relay  # True: keep output for the driver; False: print it to this worker's log
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: collections.deque[str] = collections.deque()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.port = _free_port()

    def where(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {
            "node_ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "node_id": ctx.get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "port": self.port,
            "pid": os.getpid(),
        }

    def start(self, command: str, env: dict[str, str]) -> int:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", _WRAPPER, "gravity-rank", command, sys.executable, _WATCHDOG],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env, "GRAVITY_PORT": str(self.port)},
                    start_new_session=True,
                    preexec_fn=_child_setup(),  # noqa: PLW1509 (signal state and prctl only)
                )
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            self.proc = proc
            started.set()
            assert proc.stdout is not None
            for raw in proc.stdout:
                text = raw.decode("utf-8", errors="replace").rstrip("\n")
                if self.relay:
                    with self.lock:
                        self.lines.append(text)
                else:
                    print(text, flush=True)
            proc.wait()
            self.done.set()

        threading.Thread(target=run, name="gravity-rank", daemon=True).start()
        started.wait()
        if failure:
            raise failure[0]
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> tuple[list[str], int | None]:
        """Output since the last poll, and the exit status once the command ended and its output is read."""
        code = self.proc.returncode if self.proc is not None and self.done.is_set() else None
        with self.lock:
            out = list(self.lines)
            self.lines.clear()
        return out, None if code is None else exit_status(code)

    def stop(self, grace_s: float) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else exit_status(proc.returncode)
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        return None if proc.returncode is None else exit_status(proc.returncode)


RankActor = ray.remote(Rank)


@dataclass
class Group:
    """One replica: its ranks' bundles, actors and state."""

    index: int
    specs: Sequence[RankSpec]
    first_bundle: int
    actors: list[Any] = field(default_factory=list)
    where_refs: list[Any] = field(default_factory=list)
    wheres: list[dict[str, Any]] = field(default_factory=list)
    state: str = "idle"  # idle -> starting -> running -> (backoff -> starting ...) | done
    up_since: float = 0.0
    retry_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    codes: list[int | None] = field(default_factory=list)


class Failure(Exception):
    def __init__(self, kind: CauseKind, text: str, exit_code: int | None = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.exit_code = exit_code


def say(kind: LineKind, payload: dict[str, Any]) -> None:
    print(line(kind, payload), flush=True)


class Launcher:
    def __init__(self, plan: GangPlan) -> None:
        self.plan = plan
        self.stopping = threading.Event()
        self.pg: PlacementGroup | None = None
        self.groups: list[Group] = []
        offset = 0
        for i, specs in enumerate(plan.groups):
            self.groups.append(Group(i, specs, offset))
            offset += len(specs)
        self.multi_rank = len(plan.ranks) > 1
        self.placed_said = False
        self.last_health: Health | None = None
        self.health_said_at = 0.0

    # ------------------------------------------------------------------ top level

    def run(self) -> int:
        try:
            self.reserve()
            if self.plan.service:
                return self.serve()
            return self.run_batch()
        except Failure as f:
            say(LineKind.CAUSE, {"kind": str(f.kind), "text": f.text})
            return EXIT_LAUNCHER if f.exit_code is None else f.exit_code
        finally:
            self.release()

    def reserve(self) -> None:
        plan = self.plan
        bundles = plan.bundles()
        self.pg = placement_group(bundles, strategy=plan.strategy, name=f"gravity-{plan.submission_id}")
        deadline = time.monotonic() + plan.ready_timeout_s
        while not self.stopping.is_set():
            if self.pg.wait(timeout_seconds=min(1.0, max(0.0, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                shapes = ", ".join(_shape(b) for b in bundles)
                raise Failure(
                    CauseKind.UNPLACEABLE,
                    f"the gang ({len(bundles)} bundle(s) {shapes}, {plan.strategy}) could not be placed "
                    f"within {plan.ready_timeout_s:g} s; nothing was held",
                )
        raise Failure(CauseKind.LAUNCHER, "stopped while waiting for the placement group", exit_code=143)

    def release(self) -> None:
        for g in self.groups:
            self.stop_group(g)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self.pg)

    # ------------------------------------------------------------------ groups

    def start_group(self, g: Group) -> None:
        assert self.pg is not None
        g.actors, g.wheres, g.codes = [], [], [None] * len(g.specs)
        for k, spec in enumerate(g.specs):
            options: dict[str, Any] = {
                "num_cpus": spec.cpus,
                "num_gpus": spec.gpus,
                "max_restarts": 0,
                "max_concurrency": 4,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    self.pg, placement_group_bundle_index=g.first_bundle + k
                ),
            }
            if spec.memory_bytes > 0:
                options["memory"] = spec.memory_bytes
            g.actors.append(RankActor.options(**options).remote(not self.plan.service))
        g.where_refs = [a.where.remote() for a in g.actors]
        g.state = "starting"

    def stop_group(self, g: Group) -> None:
        if not g.actors:
            return
        refs = []
        for a in g.actors:
            with contextlib.suppress(Exception):
                refs.append(a.stop.remote(STOP_GRACE_S))
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S + 2.0)
        for a in g.actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)
        g.actors, g.where_refs = [], []

    def tick_group(self, g: Group) -> None:
        """Advance one group; raises Failure when a rank's worker died or a rank failed to start."""
        if g.state == "starting":
            ready, _ = ray.wait(g.where_refs, num_returns=len(g.where_refs), timeout=0)
            if len(ready) < len(g.where_refs):
                return
            g.wheres = [self._get(ref, g, k) for k, ref in enumerate(g.where_refs)]
            master = g.wheres[0]["node_ip"]
            pids = []
            for k, a in enumerate(g.actors):
                env = {
                    "GRAVITY_REPLICA": str(g.index),
                    "GRAVITY_RANK": str(k),
                    "GRAVITY_WORLD_SIZE": str(len(g.actors)),
                    "GRAVITY_MASTER_ADDR": master,
                    "GRAVITY_MASTER_PORT": str(g.wheres[0]["port"]),
                }
                pids.append(self._get(a.start.remote(self.plan.command, env), g, k))
            g.state, g.up_since = "running", time.monotonic()
            self.say_placed()
            return
        if g.state != "running":
            return
        for k, a in enumerate(g.actors):
            if g.codes[k] is not None:
                continue
            lines, code = self._get(a.poll.remote(), g, k)
            for text in lines:
                print(f"[rank {k}] {text}" if self.multi_rank else text, flush=True)
            g.codes[k] = code

    def _get(self, ref: Any, g: Group, k: int) -> Any:
        try:
            return ray.get(ref, timeout=RPC_TIMEOUT_S)
        except ray.exceptions.RayActorError as exc:
            where = g.wheres[k] if k < len(g.wheres) else {}
            at = f" on node {where['node_ip']} (worker pid {where['pid']})" if where else ""
            raise Failure(
                CauseKind.WORKER_DIED,
                f"worker died: replica {g.index} rank {k}{at}: {_first_line(exc)}",
            ) from None
        except ray.exceptions.GetTimeoutError:
            raise Failure(
                CauseKind.WORKER_DIED,
                f"worker unresponsive: replica {g.index} rank {k} did not answer within {RPC_TIMEOUT_S:g} s",
            ) from None

    def say_placed(self) -> None:
        if self.placed_said or any(g.state != "running" for g in self.groups):
            return
        self.placed_said = True
        ranks = [
            {
                "replica": g.index,
                "rank": k,
                "node_ip": w["node_ip"],
                "node_id": w["node_id"],
                "worker_pid": w["pid"],
                "gpu_ids": w["gpu_ids"],
                "cuda_visible_devices": w["cuda_visible_devices"],
            }
            for g in self.groups
            for k, w in enumerate(g.wheres)
        ]
        say(LineKind.PLACED, {"ranks": ranks})

    # ------------------------------------------------------------------ batch

    def run_batch(self) -> int:
        (g,) = self.groups
        self.start_group(g)
        while not self.stopping.is_set():
            self.tick_group(g)
            if g.state == "running":
                failed = [c for c in g.codes if c is not None and c != 0]
                if failed:
                    self.stop_group(g)
                    return failed[0]
                if all(c == 0 for c in g.codes):
                    g.state = "done"
                    return 0
            time.sleep(self.plan.poll_s)
        return 143

    # ------------------------------------------------------------------ services

    def serve(self) -> int:
        for g in self.groups:
            self.start_group(g)
        while not self.stopping.is_set():
            now = time.monotonic()
            for g in self.groups:
                if g.state == "backoff" and now >= g.retry_at:
                    g.restarts += 1
                    self.event(f"restarting replica {g.index} (restart {g.restarts})")
                    self.start_group(g)
                try:
                    self.tick_group(g)
                except Failure as f:
                    self.replica_failed(g, f.text)
                    continue
                if g.state == "running":
                    if now - g.up_since >= STABLE_AFTER_S:
                        g.failures_in_a_row = 0
                    ended = [(k, c) for k, c in enumerate(g.codes) if c is not None]
                    if ended:
                        k, c = ended[0]
                        self.replica_failed(g, f"replica {g.index} rank {k} exited with status {c}")
            self.report_health()
            time.sleep(self.plan.poll_s)
        return 143

    def replica_failed(self, g: Group, why: str) -> None:
        self.stop_group(g)
        g.failures_in_a_row += 1
        delay = min(self.plan.restart_backoff_max_s, self.plan.restart_backoff_s * 2 ** (g.failures_in_a_row - 1))
        g.state, g.retry_at = "backoff", time.monotonic() + delay
        self.event(f"{why}; restarting in {delay:g} s")

    def event(self, text: str) -> None:
        say(LineKind.EVENT, {"text": text})

    def report_health(self) -> None:
        running = [g for g in self.groups if g.state == "running"]
        restarts = sum(g.restarts for g in self.groups)
        failed = any(g.failures_in_a_row or g.restarts for g in self.groups)
        n = len(self.groups)
        if len(running) == n:
            state = HealthState.HEALTHY
        elif running:
            state = HealthState.DEGRADED
        else:
            state = HealthState.UNHEALTHY if failed else HealthState.STARTING
        endpoints = tuple(f"{g.wheres[0]['node_ip']}:{g.wheres[0]['port']}" for g in running)
        health = Health(state, len(running), n, endpoints, restarts)
        now = time.monotonic()
        if health != self.last_health or now - self.health_said_at >= self.plan.health_every_s:
            say(LineKind.HEALTH, health.payload())
            self.last_health, self.health_said_at = health, now


def _shape(bundle: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"


def _first_line(value: object) -> str:
    for text in str(value).splitlines():
        if text.strip():
            return text.strip()
    return ""


def main() -> int:
    raw = os.environ.get(PLAN_ENV)
    if not raw:
        print(f"{PLAN_ENV} is not set: this is Gravity's launcher, started by Gravity's Ray executor", flush=True)
        return 2
    try:
        plan = GangPlan.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        say(LineKind.CAUSE, {"kind": str(CauseKind.LAUNCHER), "text": f"bad plan: {exc}"})
        return EXIT_LAUNCHER
    launcher = Launcher(plan)

    def on_term(signum: int, frame: object) -> None:
        launcher.stopping.set()

    ray.init(log_to_driver=False, logging_level=logging.WARNING)
    signal.signal(signal.SIGTERM, on_term)  # after ray.init, which installs its own handler
    try:
        return launcher.run()
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
