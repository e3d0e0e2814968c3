"""Submit-to-decision throughput and latency through gRPC, single calls vs batches.

    python benchmarks/bench_grpc.py [--seconds 10] [--batch 1000] [--clients 2]

Starts `gravity serve` (default catalog, memory store, virtual executor so that capacity
churns without real processes) in its own process, then drives it from client processes:

  single  each client keeps a window of SubmitJob calls in flight
  batch   each client sends SubmitJobs batches of --batch specs

Throughput = jobs accepted per second of the submitting window; jobs placed per second over the
same window plus the drain. Latency = the job's first scheduling decision (Job.decided_at: placed,
or waiting with a reason, on the server clock) minus the client's time just before the RPC that
carried it, so it includes the RPC itself. Both sides share this 2-core machine.
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
from pathlib import Path

import grpc

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[1] / "proto")]

from gravity.v1 import scheduler_pb2 as pb  # noqa: E402
from gravity.v1 import scheduler_pb2_grpc as pb_grpc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_spec(i: int, tag: str) -> pb.JobSpec:
    # Small training jobs (1-2 GPUs, 0.2 s on the reference GPU) so capacity churns quickly.
    return pb.JobSpec(
        name=f"bench-{tag}-{i}",
        kind=pb.JOB_KIND_TRAINING,
        gpus=1 + (i % 2),
        runtime_s=0.2,
        entrypoint="true",
        request_id=f"{tag}-{i}",
        tags=pb.Tags(project="bench", cost_center=f"cc-{i % 4}"),
    )


def client(mode: str, address: str, seconds: float, batch: int, tag: str, out: mp.Queue) -> None:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.SchedulerStub(channel)
    submitted: dict[str, float] = {}
    end = time.time() + seconds
    i = 0
    if mode == "single":
        window: list[tuple[float, str, grpc.Future]] = []
        while time.time() < end or window:
            while time.time() < end and len(window) < 64:
                window.append(
                    (time.time(), f"{tag}-{i}", stub.SubmitJob.future(pb.SubmitJobRequest(spec=make_spec(i, tag))))
                )
                i += 1
            t0, _, fut = window.pop(0)
            resp = fut.result()
            submitted[resp.job.id] = t0
    else:
        while time.time() < end:
            specs = [make_spec(i + k, tag) for k in range(batch)]
            i += batch
            t0 = time.time()
            resp = stub.SubmitJobs(pb.SubmitJobsRequest(specs=specs))
            for r in resp.results:
                submitted[r.job.id] = t0
    out.put(submitted)
    channel.close()


def collect(stub: pb_grpc.SchedulerStub, ids: dict[str, float], timeout_s: float) -> tuple[list[float], int]:
    """Submit-to-first-decision latency (s) of every job, and how many ended up placed."""
    deadline = time.time() + timeout_s
    latencies: dict[str, float] = {}
    placed: set[str] = set()
    while time.time() < deadline and len(placed) < len(ids):
        token = ""
        while True:
            resp = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token))
            for j in resp.jobs:
                if j.id not in ids:
                    continue
                if j.id not in latencies and j.HasField("decided_at"):
                    latencies[j.id] = j.decided_at.seconds + j.decided_at.nanos / 1e9 - ids[j.id]
                if j.HasField("placement"):
                    placed.add(j.id)
            token = resp.next_page_token
            if not token:
                break
        time.sleep(0.2)
    return sorted(latencies.values()), len(placed)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{Path(__file__).parents[1]}:{Path(__file__).parents[1] / 'proto'}"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--executor",
            "sim",
        ],
        env={**env, "GRAVITY_CYCLE__TICK_S": str(args.tick), "GRAVITY_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    address = f"127.0.0.1:{port}"
    try:
        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.SchedulerStub(channel)
        queue: mp.Queue = mp.Queue()
        procs = [
            mp.Process(target=client, args=(mode, address, args.seconds, args.batch, f"{mode}{c}", queue))
            for c in range(args.clients)
        ]
        t0 = time.time()
        for p in procs:
            p.start()
        ids: dict[str, float] = {}
        for _ in procs:
            ids.update(queue.get())
        for p in procs:
            p.join()
        elapsed = time.time() - t0
        latencies, placed = collect(stub, ids, timeout_s=60)
        drained = time.time() - t0
        channel.close()
        return {
            "accepted_per_s": len(ids) / elapsed,
            "placed_per_s": placed / drained,
            "jobs": len(ids),
            "placed": placed,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": 1000 * pct(latencies, 99),
        }
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--tick", type=float, default=0.05, help="scheduling tick of the server (s)")
    ap.add_argument("--quick", action="store_true", help="3-second runs")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 3.0
    cpus = os.cpu_count()
    print(f"machine: {cpus} CPUs; {args.clients} client processes; tick {args.tick}s; {args.seconds:.0f}s per mode")
    print(f"{'mode':<8} {'accepted/s':>11} {'placed/s':>9} {'jobs':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for mode in ("single", "batch"):
        r = run(mode, args)
        print(
            f"{mode:<8} {r['accepted_per_s']:>11,.0f} {r['placed_per_s']:>9,.0f} {r['jobs']:>8,.0f} "
            f"{r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f}"
        )


if __name__ == "__main__":
    main()
