"""Run placed jobs on Ray through the Job Submission API (HTTP to each cluster's dashboard).

One attempt = one Ray job submission whose submission id is `LaunchRequest.launch_id`, so Ray
itself refuses a second copy. The executor keeps a per-site map to clusters (`ClusterTarget`:
address and HTTP headers); sites that share an address share one client and one `list_jobs`.

Where work goes, per site, first match wins:
  settings.site_addresses[site] > the catalog's `ray_address` for the site > settings.ray_address
  > the embedded local cluster (`ray_local.LocalRayCluster`), started only if some site needs it
  (so with no address at all every site runs locally; with only some site_addresses, the others do).
The embedded cluster offers `site:<name>` custom resources sized to Catalog.total_gpus(site) and
`settings.local_gpus` logical GPUs (0: the sum of those totals), so a machine without GPUs
still accounts GPUs; Ray sets CUDA_VISIBLE_DEVICES for the entrypoint from them.

Each submission asks for: entrypoint_num_gpus = the job's GPUs (fractional for a shared GPU),
entrypoint_resources = {site:<site>: the same amount}, entrypoint_num_cpus = 0, and carries
env vars (spec.env + GRAVITY_JOB_ID/ATTEMPT/SITE/POOL/GPU_MODEL) and metadata (gravity_job_id,
gravity_attempt, gravity_epoch, gravity_site). A remote cluster must advertise `site:<name>` on
the nodes that serve that site (e.g. `ray start --resources='{"site:aws-us-east-1": 512}'`),
otherwise its jobs stay PENDING until Ray's job start timeout fails them.

Threads: `launch` and `cancel` only queue work for a small pool; a poller thread calls
`list_jobs()` once per cluster every `poll_s`, turns status changes into ExecEvents, fetches
log tails for finished jobs, and retries submissions a down cluster did not take. `poll`,
`active` and `unavailable_sites` read memory only.

Unreachable clusters (connection refused or timed out, or authentication refused) make their
sites unavailable until a later call succeeds. The behaviour is: `launch()` to a site already
known to be unavailable raises LaunchError(retryable=True, site=...) and queues nothing; a
launch accepted while the site looked fine is resubmitted (same submission id, so never
twice) when the cluster answers again, and reported FAILED ("site ... unreachable") if it has
not been taken after SUBMIT_GIVE_UP_S. HTTP 5xx answers are retried the same way; 4xx answers
(a bad runtime environment, say) fail the attempt at once.

Authentication: the embedded cluster uses its own random token (sent as a header). A remote
cluster with token authentication (RAY_AUTH_MODE=token on the cluster; `ray.init()` of recent Ray
turns it on by default for the clusters it starts) needs the scheduler process started with
RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or a file named by
RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token): Ray's client reads them when `ray` is first
imported (setting them later in-process has no effect), as the `ray job` CLI does. A refused
token makes the cluster's sites unavailable, with the reason in the log.

After a Gravity restart the executor adopts every Gravity submission it finds on its clusters
(metadata `gravity_job_id`): live ones are tracked to completion, finished ones are reported
once (the store ignores news about attempts that are over), ENDS_PER_SWEEP per look at most.
Closing the executor leaves running jobs running; only an embedded cluster it started is stopped.
"""

from __future__ import annotations

import collections
import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray.exceptions
import requests
from ray.job_submission import JobSubmissionClient

from placers.catalog import Catalog
from scheduler.executors.base import ExecEvent, ExecEventKind, LaunchError, LaunchRequest
from scheduler.executors.ray_local import LocalRayCluster, site_resource
from scheduler.settings import ExecutorSettings

log = logging.getLogger("gravity.executor.ray")

HTTP_TIMEOUT_S = (3.05, 30.0)  # (connect, read) for every call to a dashboard
SUBMIT_WORKERS = 4
INFRASTRUCTURE_CAUSES = ("not launched", "lost by Ray")
SUBMIT_GIVE_UP_S = 300.0  # a launch no cluster took for this long is reported FAILED
LOST_AFTER_S = 60.0  # a submitted job its cluster no longer lists for this long is reported FAILED
ACTIVE_WAIT_S = 10.0  # active() waits this long at most for the first look at every cluster
ENDS_PER_SWEEP = 200  # finished jobs reported per look at a cluster (each needs a log fetch); the rest wait

META_JOB = "gravity_job_id"
META_ATTEMPT = "gravity_attempt"
META_EPOCH = "gravity_epoch"
META_SITE = "gravity_site"

_LIVE = frozenset({"PENDING", "RUNNING"})
_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_STATUS_CODE = re.compile(r"status code (\d{3})")
# Ray's own first lines in a job's log (the entrypoint line is dropped by submission id)
_RAY_PREAMBLE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\tINFO job_manager\.py:\d+ -- Runtime env is setting up\.$"
)
_AUTH_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(ray.exceptions, "AuthenticationError", None),) if isinstance(e, type)
)
_UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    *_AUTH_ERRORS,
)


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """Where a site's jobs go: a Ray dashboard URL and extra HTTP headers (auth) for it."""

    address: str
    headers: Mapping[str, str] = field(default_factory=dict)


def resolve_addresses(ex: ExecutorSettings, catalog: Catalog) -> dict[str, str | None]:
    """Site -> Ray dashboard address; None for a site served by the embedded local cluster."""
    unknown = sorted(set(ex.site_addresses) - set(catalog.site_index))
    if unknown:
        raise ValueError(f"executor.site_addresses: unknown site(s) {', '.join(unknown)}")
    return {s.name: ex.site_addresses.get(s.name) or s.ray_address or ex.ray_address or None for s in catalog.sites}


def start_embedded(ex: ExecutorSettings, catalog: Catalog, sites: Sequence[str]) -> LocalRayCluster:
    """The local Ray for `sites`: a `site:<name>` resource of Catalog.total_gpus(site) each, and
    `ex.local_gpus` logical GPUs (0: the sum of those totals)."""
    totals = {site: catalog.total_gpus(site) for site in sites}
    return LocalRayCluster.start(
        gpus=ex.local_gpus or sum(totals.values()),
        resources={site_resource(site): float(n) for site, n in totals.items()},
    )


def launch_gpus(request: LaunchRequest) -> float:
    """The GPUs an attempt asks Ray for: whole GPUs, or a share of one (gpu_milli < 1000)."""
    spec = request.spec
    if spec.gpu_milli >= 1000:
        return float(spec.total_gpus)
    return round(spec.total_gpus * spec.gpu_milli / 1000.0, 4)


def submission_args(request: LaunchRequest) -> dict[str, Any]:
    """The keyword arguments of JobSubmissionClient.submit_job for one attempt."""
    spec, placement = request.spec, request.placement
    gpus = launch_gpus(request)
    env = {str(k): str(v) for k, v in spec.env.items()}
    env.update(
        GRAVITY_JOB_ID=request.job_id,
        GRAVITY_ATTEMPT=str(request.attempt),
        GRAVITY_SITE=placement.site,
        GRAVITY_POOL=placement.pool,
        GRAVITY_GPU_MODEL=placement.gpu_model,
    )
    return {
        "entrypoint": spec.entrypoint,
        "submission_id": request.launch_id,
        "runtime_env": {"env_vars": env},
        "metadata": {
            META_JOB: request.job_id,
            META_ATTEMPT: str(request.attempt),
            META_EPOCH: str(request.epoch),
            META_SITE: placement.site,
        },
        "entrypoint_num_cpus": 0,
        "entrypoint_num_gpus": gpus,
        "entrypoint_resources": {site_resource(placement.site): gpus} if gpus > 0 else None,
    }


class _Client(JobSubmissionClient):
    """JobSubmissionClient with a timeout on every request (Ray's own calls have none)."""

    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return super()._do_request(method, endpoint, **kwargs)


class _Cluster:
    """One Ray cluster and the sites it serves. State is guarded by the executor's lock;
    `client()` does HTTP and is only called from pool or poller threads."""

    def __init__(self, target: ClusterTarget, sites: Sequence[str]) -> None:
        self.target = target
        self.sites = tuple(sites)
        self.reachable: bool | None = None  # None: not tried yet
        self.error = ""
        self.listed = False  # list_jobs answered at least once
        self.live: dict[str, int] = {}  # job id -> attempt, PENDING/RUNNING at the last look
        self._client: JobSubmissionClient | None = None
        self._connect_lock = threading.Lock()

    def client(self) -> JobSubmissionClient:
        with self._connect_lock:
            if self._client is None:
                self._client = _Client(self.target.address, headers=dict(self.target.headers))
            return self._client


class _Phase(enum.Enum):
    QUEUED = "queued"  # its cluster did not take it yet: the poller submits it again
    SUBMITTING = "submitting"  # a pool thread is submitting it
    SUBMITTED = "submitted"
    DONE = "done"  # its terminal event is out


@dataclass
class _Submission:
    submission_id: str
    job_id: str
    attempt: int
    site: str
    cluster: _Cluster
    request: LaunchRequest | None  # None when adopted from the cluster after a restart
    phase: _Phase
    queued_at: float
    seen_at: float = 0.0  # when Ray last listed it (or took it)
    started: bool = False
    stop_requested: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Finish:
    """A terminal status seen by the poller; its event goes out once the log tail is fetched."""

    sub: _Submission
    kind: ExecEventKind
    at: float
    exit_code: int | None
    cause: str
    ran: bool  # the entrypoint started (a STARTED event precedes the terminal one)


class RayExecutor:
    """The Executor protocol on Ray's Job Submission API. See the module docstring."""

    def __init__(
        self,
        catalog: Catalog,
        targets: Mapping[str, ClusterTarget],
        settings: ExecutorSettings | None = None,
        *,
        owned: LocalRayCluster | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.settings = settings or ExecutorSettings()
        self.clock = clock
        self._owned = owned
        by_target: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[ClusterTarget, list[str]]] = {}
        for site, target in targets.items():
            key = (target.address, tuple(sorted(target.headers.items())))
            by_target.setdefault(key, (target, []))[1].append(site)
        self._clusters = [_Cluster(t, sites) for t, sites in by_target.values()]
        self._site_cluster = {s: c for c in self._clusters for s in c.sites}  # the per-site map
        self._lock = threading.Lock()
        self._subs: dict[str, _Submission] = {}  # submission id -> not yet finished
        self._done: set[str] = set()  # submission ids whose terminal event is out
        self._events: collections.deque[ExecEvent] = collections.deque()
        self._ray_active: dict[str, int] = {}  # job id -> attempt, Ray PENDING/RUNNING at the last look
        self._cancelled: set[str] = set()  # job ids cancelled by Gravity
        self._stopping: set[str] = set()  # submission ids the poller asked Ray to stop
        self._first_sweep = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._pool = ThreadPoolExecutor(SUBMIT_WORKERS, thread_name_prefix="gravity-ray-submit")
        self._poller = threading.Thread(target=self._poll_loop, name="gravity-ray-poller", daemon=True)
        self._poller.start()

    @classmethod
    def from_settings(cls, ex: ExecutorSettings, catalog: Catalog) -> RayExecutor:
        """Connect to the configured clusters; start the embedded one if some site has none."""
        addresses = resolve_addresses(ex, catalog)
        local_sites = [site for site, address in addresses.items() if address is None]
        owned: LocalRayCluster | None = None
        targets: dict[str, ClusterTarget] = {}
        if local_sites:
            owned = start_embedded(ex, catalog, local_sites)
            log.info("sites on the embedded Ray: %s", ", ".join(local_sites))
            local = ClusterTarget(owned.address, owned.headers)
            targets.update(dict.fromkeys(local_sites, local))
        for site, address in addresses.items():
            if address is not None:
                targets[site] = ClusterTarget(address)
        return cls(catalog, targets, ex, owned=owned)

    # ================================================================== Executor protocol

    def launch(self, request: LaunchRequest) -> None:
        site = request.placement.site
        with self._lock:
            if self._closed:
                raise LaunchError("the Ray executor is closed", retryable=True, site=site)
            sid = request.launch_id
            if sid in self._subs or sid in self._done:
                return
            cluster = self._site_cluster.get(site)
            if cluster is None:
                raise LaunchError(f"no Ray cluster serves site {site!r}", retryable=False, site=site)
            if cluster.reachable is False:
                raise LaunchError(
                    f"the Ray cluster of site {site} ({cluster.target.address}) is unreachable: {cluster.error}",
                    retryable=True,
                    site=site,
                )
            sub = _Submission(
                sid, request.job_id, request.attempt, site, cluster, request, _Phase.SUBMITTING, self.clock()
            )
            self._subs[sid] = sub
            self._cancelled.discard(request.job_id)
        self._pool.submit(self._submit, sub)

    def cancel(self, job_id: str) -> None:
        to_stop: list[_Submission] = []
        with self._lock:
            self._cancelled.add(job_id)
            for sub in list(self._subs.values()):
                if sub.job_id != job_id or sub.phase is _Phase.DONE:
                    continue
                sub.stop_requested = True
                if sub.phase is _Phase.QUEUED:  # Ray did not take it (if it did after all, the poller stops it)
                    self._finish_locked(sub, ExecEventKind.STOPPED, self.clock(), None, "cancelled", "")
                elif sub.phase is _Phase.SUBMITTED:
                    to_stop.append(sub)
                    self._stopping.add(sub.submission_id)
                # SUBMITTING: _submit stops it once Ray has it
        for sub in to_stop:
            self._pool.submit(self._stop_job, sub)

    def poll(self) -> Sequence[ExecEvent]:
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    def active(self) -> dict[str, int]:
        """Attempts Ray reported PENDING/RUNNING at its last look, plus our launches it does not list yet."""
        self._first_sweep.wait(ACTIVE_WAIT_S)
        with self._lock:
            out = dict(self._ray_active)
            for sub in self._subs.values():
                if sub.request is not None and sub.phase is not _Phase.DONE:
                    out[sub.job_id] = max(out.get(sub.job_id, -1), sub.attempt)
            return out

    def unavailable_sites(self) -> frozenset[str]:
        with self._lock:
            return frozenset(s for c in self._clusters if c.reachable is False for s in c.sites)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._poller.join(HTTP_TIMEOUT_S[0] + HTTP_TIMEOUT_S[1] + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._owned is not None:
            self._owned.close()

    # ================================================================== pool work

    def _submit(self, sub: _Submission) -> None:
        assert sub.request is not None
        with self._lock:
            if sub.stop_requested:
                self._finish_locked(sub, ExecEventKind.STOPPED, self.clock(), None, "cancelled", "")
                return
        cluster = sub.cluster
        try:
            cluster.client().submit_job(**submission_args(sub.request))
        except _UNREACHABLE as exc:
            self._mark(cluster, False, exc)
            self._requeue(sub, f"site {sub.site} unreachable: {_first_line(exc)}")
            return
        except Exception as exc:
            text = str(exc)
            status = _http_status(text)
            if "already exists" not in text:
                if status is not None and status >= 500:
                    self._requeue(sub, f"Ray answered {status}: {_first_line(exc)}")
                    return
                log.warning("Ray refused launch %s: %s", sub.submission_id, text)
                with self._lock:
                    self._finish_locked(
                        sub, ExecEventKind.FAILED, self.clock(), None, f"Ray refused the job: {_first_line(exc)}", ""
                    )
                return
        self._mark(cluster, True)
        with self._lock:
            if sub.phase is _Phase.DONE:
                return
            sub.phase = _Phase.SUBMITTED
            sub.seen_at = self.clock()
            stop = sub.stop_requested
        if stop:
            self._stop_job(sub)

    def _stop_job(self, sub: _Submission) -> None:
        """Ask Ray to stop a submission; on failure the poller asks again while Ray lists it live."""
        try:
            sub.cluster.client().stop_job(sub.submission_id)
            return
        except _UNREACHABLE as exc:
            self._mark(sub.cluster, False, exc)
        except Exception as exc:
            log.warning("stopping %s failed: %s", sub.submission_id, _first_line(exc))
        with self._lock:
            self._stopping.discard(sub.submission_id)

    def _requeue(self, sub: _Submission, why: str) -> None:
        with self._lock:
            if sub.phase is _Phase.DONE:
                return
            sub.error = why
            if sub.stop_requested:
                self._finish_locked(sub, ExecEventKind.STOPPED, self.clock(), None, "cancelled", "")
            elif self.clock() - sub.queued_at >= SUBMIT_GIVE_UP_S:
                self._finish_locked(sub, ExecEventKind.FAILED, self.clock(), None, f"not launched: {why}", "")
            else:
                sub.phase = _Phase.QUEUED

    def _mark(self, cluster: _Cluster, reachable: bool, exc: BaseException | None = None) -> None:
        with self._lock:
            if reachable:
                if cluster.reachable is False:
                    log.info("Ray at %s answers again (sites %s)", cluster.target.address, ", ".join(cluster.sites))
                cluster.reachable, cluster.error = True, ""
            else:
                if cluster.reachable is not False:
                    log.warning(
                        "Ray at %s unreachable (sites %s): %s",
                        cluster.target.address,
                        ", ".join(cluster.sites),
                        _first_line(exc),
                    )
                cluster.reachable, cluster.error = False, _first_line(exc)

    # ================================================================== the poller

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sweep()
            except Exception:  # the poller must survive anything; it tries again next tick
                log.exception("Ray poll failed")
            self._stop.wait(self.settings.poll_s)

    def _sweep(self) -> None:
        for cluster in self._clusters:
            if self._stop.is_set():
                return
            try:
                jobs = cluster.client().list_jobs()
            except _UNREACHABLE as exc:
                self._mark(cluster, False, exc)
                continue
            except Exception as exc:  # it answered, but not with a list: try again next tick
                log.warning("list_jobs at %s failed: %s", cluster.target.address, _first_line(exc))
                continue
            self._mark(cluster, True)
            self._reconcile(cluster, jobs)
        self._resubmit()
        if all(c.listed or c.reachable is False for c in self._clusters):
            self._first_sweep.set()

    def _reconcile(self, cluster: _Cluster, jobs: Sequence[Any]) -> None:
        now = self.clock()
        finishes: list[_Finish] = []
        stops: list[_Submission] = []
        live: dict[str, int] = {}
        adopted = 0
        with self._lock:
            for d in jobs:
                sid, meta = d.submission_id, d.metadata or {}
                job_id = meta.get(META_JOB)
                if not sid or not job_id:
                    continue  # not ours (a plain driver, or another tool's job)
                status = str(getattr(d.status, "value", d.status))
                attempt = _int(meta.get(META_ATTEMPT), -1)
                sub = self._subs.get(sid)
                if status in _LIVE:
                    live[job_id] = max(live.get(job_id, -1), attempt)
                    if job_id in self._cancelled and sid not in self._stopping:
                        self._stopping.add(sid)  # cancelled, yet still there: stop it (again)
                        stops.append(sub or _Submission(sid, job_id, attempt, "", cluster, None, _Phase.DONE, now))
                elif status in _TERMINAL:
                    self._stopping.discard(sid)
                if sid in self._done:
                    continue
                if sub is None:  # launched before a restart, or by another Gravity process
                    site = str(meta.get(META_SITE, ""))
                    sub = _Submission(sid, job_id, attempt, site, cluster, None, _Phase.SUBMITTED, now)
                    self._subs[sid] = sub
                    adopted += 1
                if sub.phase is not _Phase.SUBMITTED:
                    continue  # our own submit call has not returned yet, or its end is being reported
                sub.seen_at = now
                if status == "RUNNING" and not sub.started:
                    sub.started = True
                    self._events.append(ExecEvent(job_id, sub.attempt, ExecEventKind.STARTED, now))
                if status in _TERMINAL and len(finishes) < ENDS_PER_SWEEP:
                    sub.phase = _Phase.DONE  # only the poller finishes submitted jobs: no double report
                    finishes.append(self._finish_of(sub, d, status, now))
            for sub in self._subs.values():
                if sub.cluster is cluster and sub.phase is _Phase.SUBMITTED and now - sub.seen_at >= LOST_AFTER_S:
                    sub.phase = _Phase.DONE
                    finishes.append(
                        _Finish(
                            sub,
                            ExecEventKind.FAILED,
                            now,
                            None,
                            "lost by Ray: the cluster no longer knows the job",
                            False,
                        )
                    )
            cluster.live = live
            cluster.listed = True
            ray_active: dict[str, int] = {}  # before any end below is reported: never stale
            for c in self._clusters:
                for job_id, n in c.live.items():
                    ray_active[job_id] = max(ray_active.get(job_id, -1), n)
            self._ray_active = ray_active
        if adopted:
            log.info("adopted %d Gravity submission(s) found on Ray at %s", adopted, cluster.target.address)
        for sub in stops:
            self._stop_job(sub)
        for f in finishes:
            tail = self._log_tail(f.sub)
            with self._lock:
                if f.ran and not f.sub.started:
                    f.sub.started = True
                    self._events.append(ExecEvent(f.sub.job_id, f.sub.attempt, ExecEventKind.STARTED, f.at))
                self._finish_locked(f.sub, f.kind, f.at, f.exit_code, f.cause, tail)

    def _finish_of(self, sub: _Submission, d: Any, status: str, now: float) -> _Finish:
        code = d.driver_exit_code
        end_ms = d.end_time or 0
        at = min(now, end_ms / 1000.0) if end_ms > 0 else now
        message = _first_line(d.message or "")
        if status == "SUCCEEDED":
            return _Finish(sub, ExecEventKind.SUCCEEDED, at, 0 if code is None else code, "", True)
        ran = code is not None or sub.started
        if status == "STOPPED":
            if sub.stop_requested or sub.job_id in self._cancelled:
                return _Finish(sub, ExecEventKind.STOPPED, at, code, "cancelled", ran)
            return _Finish(sub, ExecEventKind.FAILED, at, code, f"stopped outside Gravity: {message}", ran)
        error = str(getattr(d, "error_type", None) or "")
        cause = message.split(", last available logs")[0].rstrip(":") or (
            f"exit code {code}" if code is not None else "failed"
        )
        return _Finish(sub, ExecEventKind.FAILED, at, code, f"{cause} ({error})" if error else cause, ran)

    def _log_tail(self, sub: _Submission) -> str:
        try:
            text = sub.cluster.client().get_job_logs(sub.submission_id)
        except Exception as exc:  # logs are best effort: the event goes out without them
            log.warning("no logs for %s: %s", sub.submission_id, _first_line(exc))
            return ""
        ours = f"Running entrypoint for job {sub.submission_id}: "
        lines = [x for x in str(text).splitlines() if not x.startswith(ours) and not _RAY_PREAMBLE.match(x)]
        return "\n".join(lines[-self.settings.log_tail_lines :])

    def _resubmit(self) -> None:
        again: list[_Submission] = []
        with self._lock:
            now = self.clock()
            for sub in list(self._subs.values()):
                if sub.phase is not _Phase.QUEUED:
                    continue
                if sub.cluster.reachable is False and now - sub.queued_at >= SUBMIT_GIVE_UP_S:
                    self._finish_locked(sub, ExecEventKind.FAILED, now, None, f"not launched: {sub.error}", "")
                elif sub.cluster.reachable is not False:
                    sub.phase = _Phase.SUBMITTING
                    again.append(sub)
        for sub in again:
            self._pool.submit(self._submit, sub)

    def _finish_locked(
        self, sub: _Submission, kind: ExecEventKind, at: float, exit_code: int | None, cause: str, tail: str
    ) -> None:
        sub.phase = _Phase.DONE
        self._subs.pop(sub.submission_id, None)
        self._done.add(sub.submission_id)
        # An attempt that never started, or that Ray lost, failed for platform reasons: retried for free.
        infrastructure = kind is ExecEventKind.FAILED and cause.startswith(INFRASTRUCTURE_CAUSES)
        self._events.append(ExecEvent(sub.job_id, sub.attempt, kind, at, exit_code, tail, cause, infrastructure))


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""


def _http_status(text: str) -> int | None:
    m = _STATUS_CODE.search(text)
    return int(m.group(1)) if m else None


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default
