"""Submit-to-decision throughput and latency through gRPC: single SubmitJob calls vs SubmitJobs batches.

    python benchmarks/bench_grpc.py [--seconds 10] [--quick]

Starts `gravity serve` (default catalog, memory store, virtual executor: nothing runs, so the
figures are the scheduler's) in its own process and drives it from client processes that send
pre-serialised requests (built before the clock starts, responses not decoded: little client CPU
on this shared machine). Each scenario offers a fixed load for --seconds:

  single 1k/s      SubmitJob calls at 1,000 jobs/s (the issue's target), 64 in flight at most
  batch 10k/s      SubmitJobs of 1,000 specs at 10,000 jobs/s (the issue's target)
  single max       SubmitJob as fast as the server answers (saturation)
  batch max        SubmitJobs as fast as the server answers (saturation)
  batch 10k/s churn  as batch 10k/s, but jobs run 1 s: capacity turns over and execution
                   events (started, succeeded) are processed while decisions are made

Jobs are 1-2 GPU training jobs; with hour-long runtimes the default catalog (2,424 GPUs) is full
after ~1,600 jobs and every later job is decided "waiting" with its reason, which is a decision
too. Reported: jobs accepted per second, decided per second, placed, and the latency from the
client sending the request to the job's first decision (Job.decided_at, server clock; both on
this machine), p50/p99 over every job sent. Jobs still undecided when the run ends count with
the time they have waited so far (the p99 then says so). `cpu ms/job` is the server process's CPU
time per accepted job during the run: independent of how loaded the machine is.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from gravity.v1 import scheduler_pb2 as pb  # noqa: E402
from gravity.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402

BATCH = 1000


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # single | batch
    rate: float  # offered jobs/s over all clients; 0 = as fast as answered
    runtime_s: float


SCENARIOS = (
    Scenario("single 1k/s", "single", 1_000, 3600.0),
    Scenario("batch 10k/s", "batch", 10_000, 3600.0),
    Scenario("single max", "single", 0, 3600.0),
    Scenario("batch max", "batch", 0, 3600.0),
    Scenario("batch 10k/s churn", "batch", 10_000, 1.0),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_spec(i: int, tag: str, runtime_s: float) -> pb.JobSpec:
    return pb.JobSpec(
        name=f"bench-{tag}-{i}",
        kind=pb.JOB_KIND_TRAINING,
        gpus=1 + (i % 2),
        runtime_s=runtime_s,
        entrypoint="true",
        request_id=f"{tag}-{i}",
        tags=pb.Tags(project="bench", cost_center=f"cc-{i % 4}"),
    )


def client(sc: Scenario, address: str, seconds: float, share: float, tag: str, out: Any, go: Any) -> None:
    """Send this client's share of the offered load; record when each request id was sent."""
    channel = grpc.insecure_channel(address)
    single = sc.mode == "single"
    method = "/gravity.v1.Scheduler/SubmitJob" if single else "/gravity.v1.Scheduler/SubmitJobs"
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    per_call = 1 if single else BATCH
    rate = sc.rate * share
    budget = int(seconds * (rate if rate else (3_000 if single else 40_000)) * 1.05) + per_call
    payloads: list[tuple[list[str], bytes]] = []
    for start in range(0, budget, per_call):
        specs = [make_spec(start + k, tag, sc.runtime_s) for k in range(per_call)]
        msg = pb.SubmitJobRequest(spec=specs[0]) if single else pb.SubmitJobsRequest(specs=specs)
        payloads.append(([s.request_id for s in specs], msg.SerializeToString()))
    out.put("ready")
    go.wait()
    sent: dict[str, float] = {}
    window: list[tuple[float, list[str], Any]] = []
    depth = 64 if single else 4
    t0 = time.time()
    end = t0 + seconds
    for k, (ids, payload) in enumerate(payloads):
        now = time.time()
        if now >= end:
            break
        if rate:
            due = t0 + k * per_call / rate
            if due > now:
                time.sleep(due - now)
        window.append((time.time(), ids, call.future(payload)))
        if len(window) >= depth:
            ts, done_ids, fut = window.pop(0)
            fut.result()
            sent.update(dict.fromkeys(done_ids, ts))
    for ts, done_ids, fut in window:
        fut.result()
        sent.update(dict.fromkeys(done_ids, ts))
    out.put(sent)
    channel.close()


def collect(stub: pb_grpc.SchedulerStub, sent: dict[str, float], at: float) -> tuple[list[float], int, int]:
    """Latency of every sent job (undecided ones: time waited until `at`), decided count, placed count."""
    latencies: list[float] = []
    placed = decided = 0
    token = ""
    while True:
        resp = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), timeout=120)
        for j in resp.jobs:
            rid = j.spec.request_id
            if rid not in sent:
                continue
            if j.HasField("decided_at"):
                decided += 1
                latencies.append(j.decided_at.seconds + j.decided_at.nanos / 1e9 - sent[rid])
            else:
                latencies.append(at - sent[rid])
            placed += j.HasField("placement")
        token = resp.next_page_token
        if not token:
            break
    return sorted(latencies), decided, placed


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def run(sc: Scenario, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}",
        "GRAVITY_CYCLE__TICK_S": str(args.tick),
        "GRAVITY_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "scheduler.cli", "serve", "--listen", f"127.0.0.1:{port}", "--executor", "sim"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.SchedulerStub(channel)
        # spawn, not fork: a client forked after this process has used gRPC can hang in it
        ctx = mp.get_context("spawn")
        queue: Any = ctx.Queue()
        go = ctx.Event()
        procs = [
            ctx.Process(target=client, args=(sc, address, args.seconds, 1 / args.clients, f"c{c}", queue, go))
            for c in range(args.clients)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            assert queue.get() == "ready"
        cpu0 = cpu_seconds(server.pid)
        t0 = time.time()
        go.set()
        sent: dict[str, float] = {}
        for _ in procs:
            sent.update(queue.get())
        for p in procs:
            p.join()
        elapsed = time.time() - t0
        time.sleep(args.tick * 4 + 0.5)  # the last tick's decisions
        cpu = cpu_seconds(server.pid) - cpu0
        at = time.time()
        latencies, decided, placed = collect(stub, sent, at)
        channel.close()
        return {
            "accepted_per_s": len(sent) / elapsed,
            "decided_per_s": decided / (at - t0),
            "jobs": len(sent),
            "placed": placed,
            "undecided": len(sent) - decided,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": 1000 * pct(latencies, 99),
            "cpu_ms_per_job": 1000 * cpu / max(1, len(sent)),
        }
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="offered-load window per scenario")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--tick", type=float, default=0.05, help="the server's scheduling tick (s)")
    ap.add_argument("--quick", action="store_true", help="3-second windows")
    ap.add_argument("--only", default="", help="run the scenarios whose name contains this")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 3.0
    print(
        f"machine: {os.cpu_count()} CPUs; {args.clients} client processes; tick {args.tick}s; {args.seconds:.0f}s each"
    )
    head = f"{'scenario':<18} {'accepted/s':>10} {'decided/s':>10} {'jobs':>8} {'placed':>7} {'undecided':>9}"
    print(f"{head} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms/job':>10}")
    for sc in SCENARIOS:
        if args.only not in sc.name:
            continue
        r = run(sc, args)
        print(
            f"{sc.name:<18} {r['accepted_per_s']:>10,.0f} {r['decided_per_s']:>10,.0f} {r['jobs']:>8,.0f} "
            f"{r['placed']:>7,.0f} {r['undecided']:>9,.0f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} "
            f"{r['cpu_ms_per_job']:>10.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
