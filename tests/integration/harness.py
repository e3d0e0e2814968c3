"""Real processes for the fault tests: Gravity servers (tests/integration/gravity_proc.py), a private
redis-server, and a gRPC client that retries the way docs/durability.md tells clients to."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import redis

from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from scheduler.store.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_REJECTED)
CHANNEL_OPTIONS = [
    # reconnect quickly to a restarted server (gRPC's default backoff grows to two minutes)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "proto")])
    return env


class GravityProc:
    """One `gravity_proc` server process; restartable on the same port."""

    def __init__(self, tmp: Path, name: str, port: int, store_url: str, prefix: str, lease_ttl_s: float) -> None:
        self.tmp, self.name, self.port = tmp, name, port
        self.store_url, self.prefix, self.lease_ttl_s = store_url, prefix, lease_ttl_s
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0
        self.ready = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def journals(self) -> list[Path]:
        return sorted(self.tmp.glob(f"journal-{self.name}-*.txt"))

    def start(self) -> None:
        self.starts += 1
        self.ready.clear()
        log = open(self.tmp / f"{self.name}-{self.starts}.log", "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.gravity_proc",
                "--listen",
                self.address,
                "--store-url",
                self.store_url,
                "--key-prefix",
                self.prefix,
                "--lease-ttl",
                str(self.lease_ttl_s),
                "--sim-speedup",
                "600",
                "--tick",
                "0.05",
                "--journal",
                str(self.tmp / f"journal-{self.name}-{self.starts}.txt"),
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        threading.Thread(target=self._watch, args=(self.proc,), daemon=True).start()

    def _watch(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                self.ready.set()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        if not self.ready.wait(timeout_s):
            raise AssertionError(f"{self.name} did not start within {timeout_s} s; see {self.tmp}/{self.name}-*.log")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with_cont = [signal.SIGCONT, signal.SIGTERM]
        for sig in with_cont:
            self.signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill9()


class RedisServer:
    """A private redis-server with AOF on (appendfsync everysec), for tests that kill Redis itself."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed: the Redis fault tests need it")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            stdout=open(self.dir / "redis.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not start; see {self.dir}/redis.log")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()


def job_spec(i: int, **kw: object) -> pb.JobSpec:
    base: dict[str, object] = {
        "name": f"fault-{i}",
        "kind": pb.JOB_KIND_BATCH,
        "gpus": 1,
        "entrypoint": "true",
        "runtime_s": 60.0,
        "request_id": f"r-{i:05d}",
        "max_retries": 3,
    }
    base.update(kw)
    return pb.JobSpec(**base)  # type: ignore[arg-type]


class Submitter:
    """Submits specs one by one, retrying UNAVAILABLE and timeouts with the same request_id, across addresses."""

    def __init__(self, addresses: Sequence[str], timeout_s: float = 2.0) -> None:
        self.channels = [grpc.insecure_channel(a, options=CHANNEL_OPTIONS) for a in addresses]
        self.stubs = [pb_grpc.SchedulerStub(c) for c in self.channels]
        self.timeout_s = timeout_s
        self.acked: dict[str, str] = {}  # request id -> job id
        self.retries: dict[str, int] = {c.name: 0 for c in RETRYABLE}
        self._lock = threading.Lock()

    def submit(self, spec: pb.JobSpec, give_up_at: float) -> None:
        turn = random.randrange(len(self.stubs))
        while True:
            stub = self.stubs[turn % len(self.stubs)]
            try:
                reply = stub.SubmitJob(pb.SubmitJobRequest(spec=spec), timeout=self.timeout_s)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                if code not in RETRYABLE or time.monotonic() > give_up_at:
                    raise
                with self._lock:
                    self.retries[code.name] += 1
                turn += 1
                time.sleep(0.05)
                continue
            with self._lock:
                previous = self.acked.setdefault(spec.request_id, reply.job.id)
            assert previous == reply.job.id, f"{spec.request_id}: acknowledged as {previous}, now {reply.job.id}"
            return

    def run(self, specs: Sequence[pb.JobSpec], threads: int, budget_s: float) -> threading.Thread:
        """Submit in the background from `threads` threads; the returned thread ends when all are acked."""
        give_up_at = time.monotonic() + budget_s
        errors: list[BaseException] = []

        def worker(mine: Sequence[pb.JobSpec]) -> None:
            try:
                for s in mine:
                    self.submit(s, give_up_at)
            except BaseException as exc:
                errors.append(exc)

        def all_workers() -> None:
            ts = [threading.Thread(target=worker, args=(specs[i::threads],)) for i in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.errors = errors

        t = threading.Thread(target=all_workers, daemon=True)
        t.start()
        return t

    def all_jobs(self, deadline_s: float = 30.0) -> list[pb.Job]:
        """Every job, via ListJobs pages, from whichever address answers."""
        end = time.monotonic() + deadline_s
        while True:
            for stub in self.stubs:
                try:
                    jobs: list[pb.Job] = []
                    token = ""
                    while True:
                        page = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), timeout=10)
                        jobs += page.jobs
                        token = page.next_page_token
                        if not token:
                            return jobs
                except grpc.RpcError:
                    if time.monotonic() > end:
                        raise
            time.sleep(0.2)

    def wait_all_terminal(self, expected: int, timeout_s: float) -> list[pb.Job]:
        end = time.monotonic() + timeout_s
        while True:
            jobs = self.all_jobs()
            if len(jobs) >= expected and all(j.state in TERMINAL for j in jobs):
                return jobs
            if time.monotonic() > end:
                waiting = [(j.id, pb.JobState.Name(j.state), j.reason) for j in jobs if j.state not in TERMINAL]
                raise AssertionError(
                    f"{len(waiting)} of {len(jobs)} jobs not terminal after {timeout_s} s: {waiting[:5]}"
                )
            time.sleep(0.5)

    def close(self) -> None:
        for c in self.channels:
            c.close()


def read_journals(paths: Sequence[Path]) -> list[tuple[str, int, int, int]]:
    """(launch id, epoch, pid, wall ns) of every launch any process's executor performed."""
    out = []
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            launch_id, epoch, pid, ns = line.split()
            out.append((launch_id, int(epoch), int(pid), int(ns)))
    return out


def leader_pid(client: redis.Redis, prefix: str) -> int | None:
    """The pid in the holder id of the live leader lease ("<epoch> <host>:<pid>:<random>")."""
    raw = client.get(Keys(prefix).leader)
    if raw is None:
        return None
    holder = (raw.decode() if isinstance(raw, bytes) else str(raw)).split(" ", 1)[1]
    return int(holder.split(":")[-2])
