"""Prometheus metrics: queue depth, decisions and their latency, spend, budgets, GPU utilisation.

Each `Metrics` has its own registry (several schedulers in one test process do not collide).
Counters and the latency histogram are updated by the scheduling cycle; gauges that describe
state (queue, utilisation, spend, budgets) are read from the store and the ledger when
Prometheus scrapes. `serve(port)` exposes /metrics over HTTP (settings.metrics_port, 0 = off).

    gravity_queue_depth                       pending jobs
    gravity_jobs{state}                       jobs per state
    gravity_decisions_total{outcome}          placed, rejected, held (budget), waiting (first wait)
    gravity_decisions_per_second              over the last minute
    gravity_decision_latency_seconds{outcome} submit to first decision (histogram)
    gravity_spend_usd{cost_center,kind}       accrued this month: compute, egress, storage
    gravity_budget_spend_ratio{budget}        (accrued + committed) / amount, this month
    gravity_budget_remaining_usd{budget}
    gravity_gpus_allocated{site} / gravity_gpus_total{site} / gravity_gpu_utilisation_ratio{site}
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.finops.budgets import BudgetStatus
from scheduler.finops.costing import Costs

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class StateReaders:
    """How the scrape-time gauges read the scheduler's state."""

    job_counts: Callable[[], Mapping[str, int]]
    site_gpus: Callable[[], Mapping[str, tuple[float, float]]]  # site -> (allocated, total)
    spend_by_cost_center: Callable[[], Mapping[str, Costs]]
    budgets: Callable[[], Sequence[BudgetStatus]]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "gravity_decisions", "Scheduling decisions, by outcome", ["outcome"], registry=self.registry
        )
        self.latency = LatencyHistogram(
            "gravity_decision_latency_seconds",
            "Time from submission to a job's first scheduling decision",
            LATENCY_BUCKETS_S,
        )
        self.registry.register(self.latency)
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int]] = deque()
        self._http: list[Callable[[], None]] = []

    def decided(self, outcomes: Mapping[str, int], first_latencies_s: Sequence[tuple[str, float]], now: float) -> None:
        n = 0
        for outcome, count in outcomes.items():
            if count:
                self.decisions.labels(outcome).inc(count)
                n += count
        by_outcome: dict[str, list[float]] = {}
        for outcome, seconds in first_latencies_s:
            by_outcome.setdefault(outcome, []).append(seconds)
        for outcome, values in by_outcome.items():
            self.latency.observe_many(outcome, np.maximum(0.0, np.asarray(values)))
        with self._lock:
            if n:
                self._recent.append((now, n))
            self._trim(now)

    def decisions_per_second(self, now: float) -> float:
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
            self._recent.popleft()

    def attach(self, readers: StateReaders, now: Callable[[], float]) -> None:
        self.registry.register(_StateCollector(readers, self, now))

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics; returns the bound port. Stopped by `close`."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5.0)

        self._http.append(stop)
        return int(server.server_address[1])

    def close(self) -> None:
        for stop in self._http:
            stop()
        self._http.clear()


class LatencyHistogram(Collector):
    """A labelled Prometheus histogram observed a batch at a time (one numpy pass per cycle, not one
    call per job: a cycle decides thousands of jobs). Bucket i counts values <= buckets[i]."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.edges = np.asarray(buckets, dtype=np.float64)
        self._counts: dict[str, npt.NDArray[np.int64]] = {}
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe_many(self, outcome: str, seconds: npt.NDArray[np.float64]) -> None:
        if len(seconds) == 0:
            return
        hits = np.bincount(np.searchsorted(self.edges, seconds, side="left"), minlength=len(self.edges) + 1)
        with self._lock:
            counts = self._counts.setdefault(outcome, np.zeros(len(self.edges) + 1, dtype=np.int64))
            counts += hits
            self._sums[outcome] = self._sums.get(outcome, 0.0) + float(seconds.sum())

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["outcome"])
        with self._lock:
            for outcome, counts in sorted(self._counts.items()):
                cumulative = np.cumsum(counts)
                buckets = [(_le(edge), int(c)) for edge, c in zip(self.edges, cumulative[:-1], strict=True)]
                buckets.append(("+Inf", int(cumulative[-1])))
                family.add_metric([outcome], buckets, self._sums[outcome])
        yield family


def _le(edge: float) -> str:
    return repr(float(edge))


class _StateCollector(Collector):
    def __init__(self, readers: StateReaders, metrics: Metrics, now: Callable[[], float]) -> None:
        self.readers = readers
        self.metrics = metrics
        self.now = now

    def collect(self) -> Iterator[Metric]:
        counts = self.readers.job_counts()
        yield GaugeMetricFamily("gravity_queue_depth", "Jobs pending a placement", value=counts.get("pending", 0))
        jobs = GaugeMetricFamily("gravity_jobs", "Jobs by state", labels=["state"])
        for state, n in sorted(counts.items()):
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(
            "gravity_decisions_per_second",
            f"Scheduling decisions per second over the last {RATE_WINDOW_S:.0f} s",
            value=self.metrics.decisions_per_second(self.now()),
        )
        alloc = GaugeMetricFamily("gravity_gpus_allocated", "GPUs held by placed and running jobs", labels=["site"])
        total = GaugeMetricFamily("gravity_gpus_total", "GPUs of the site (cloud: its quota)", labels=["site"])
        util = GaugeMetricFamily("gravity_gpu_utilisation_ratio", "Allocated / total GPUs", labels=["site"])
        for site, (a, t) in sorted(self.readers.site_gpus().items()):
            alloc.add_metric([site], a)
            total.add_metric([site], t)
            util.add_metric([site], a / t if t > 0 else 0.0)
        yield alloc
        yield total
        yield util
        spend = GaugeMetricFamily(
            "gravity_spend_usd", "Cost accrued this calendar month (UTC)", labels=["cost_center", "kind"]
        )
        for cc, c in sorted(self.readers.spend_by_cost_center().items()):
            spend.add_metric([cc, "compute"], c.compute_usd)
            spend.add_metric([cc, "egress"], c.egress_usd)
            spend.add_metric([cc, "storage"], c.storage_usd)
        yield spend
        ratio = GaugeMetricFamily(
            "gravity_budget_spend_ratio", "(accrued + committed) / budget, this month", labels=["budget"]
        )
        left = GaugeMetricFamily("gravity_budget_remaining_usd", "Budget left this month", labels=["budget"])
        for s in self.readers.budgets():
            ratio.add_metric([s.budget.id], s.share)
            left.add_metric([s.budget.id], s.remaining_usd)
        yield ratio
        yield left
