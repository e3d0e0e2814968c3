"""A real Gravity server process for the fault tests: `python -m tests.integration.gravity_proc ...`.

It is `gravity serve` (settings -> build_app -> gRPC Server, the same wiring) with the sim
executor, plus one test-only addition: every launch the executor actually performs is appended
to a journal file (launch id, epoch, pid, wall-clock ns), an independent, durable record the
tests use to count launches across processes that may be killed or paused at any moment.

Prints "READY <port> <leader-holder-id>" once serving; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from scheduler.api.server import Server
from scheduler.app import build_app
from scheduler.executors.base import ExecEvent, LaunchRequest
from scheduler.executors.sim import SimExecutor
from scheduler.settings import load_settings


class JournalingExecutor:
    """Delegates to `inner`; records each launch that `inner` really started (not idempotent repeats)."""

    def __init__(self, inner: SimExecutor, journal: IO[str]) -> None:
        self.inner = inner
        self.journal = journal
        self._lock = threading.Lock()

    def launch(self, request: LaunchRequest) -> None:
        with self._lock:
            before = self.inner.launches
            self.inner.launch(request)
            if self.inner.launches > before:
                self.journal.write(f"{request.launch_id} {request.epoch} {os.getpid()} {time.time_ns()}\n")
                self.journal.flush()  # in the kernel: survives kill -9 of this process

    def cancel(self, job_id: str) -> None:
        self.inner.cancel(job_id)

    def poll(self) -> Sequence[ExecEvent]:
        return self.inner.poll()

    def active(self) -> dict[str, int]:
        return self.inner.active()

    def unavailable_sites(self) -> frozenset[str]:
        return self.inner.unavailable_sites()

    def close(self) -> None:
        self.inner.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gravity_proc")
    p.add_argument("--listen", required=True)
    p.add_argument("--store-url", required=True)
    p.add_argument("--key-prefix", default="gravity")
    p.add_argument("--lease-ttl", type=float, default=1.0)
    p.add_argument("--sim-speedup", type=float, default=100.0)
    p.add_argument("--tick", type=float, default=0.05)
    p.add_argument("--journal", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    settings = load_settings(
        None,
        listen=args.listen,
        store_url=args.store_url,
        **{
            "executor.kind": "sim",
            "executor.sim_speedup": args.sim_speedup,
            "store.key_prefix": args.key_prefix,
            "store.lease_ttl_s": args.lease_ttl,
            "cycle.tick_s": args.tick,
        },
    )
    app = build_app(settings)
    assert isinstance(app.executor, SimExecutor)
    journal = open(args.journal, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    app.service.executor = JournalingExecutor(app.executor, journal)
    server = Server(app.service, settings.listen)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app.service.start()
    server.start()
    holder = app.leader.holder if app.leader else ""
    print(f"READY {server.port} {holder}", flush=True)
    stop.wait()
    server.stop(0.5)
    app.close()
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
