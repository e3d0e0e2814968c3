"""Run placed jobs on Ray through the Job Submission API (HTTP to each site's cluster dashboard).

Why the Job Submission API and not Ray Client: it is a plain HTTP client per cluster (no Ray
driver, no global `ray` state in the scheduler), submissions carry our own idempotent ids, jobs
survive a scheduler restart, and it is what KubeRay dashboards expose.

One attempt = one Ray job whose submission id is `LaunchRequest.launch_id`, so Ray itself refuses a
second copy. Its entrypoint is Gravity's launcher (`python -m gravity_gang`, shipped to the cluster
as a `py_modules` package; see gravity_gang/launcher.py), which reserves the job's GPUs as ONE
placement group, all or nothing, and runs the user's command in actors that hold exactly those GPUs
(Ray sets CUDA_VISIBLE_DEVICES). The executor builds the plan (`gang_plan`):

  * ranks: one per node the placement gave the job: a job marked single_node (or of one GPU, or of a
    share of one) is one rank; a job spanning nodes gets one rank per node chunk (the on-prem node
    bindings of the placement, else chunks of the pool's GPUs per node), and its command runs once
    per rank with GRAVITY_RANK / GRAVITY_WORLD_SIZE / GRAVITY_MASTER_ADDR; a service has one group
    of ranks per replica;
  * strategy: STRICT_PACK for one rank, PACK for ranks across nodes, STRICT_SPREAD for service
    replicas asked to spread (SPREAD when a replica itself spans nodes);
  * each bundle holds the rank's GPUs (fractional for a shared GPU), the same amount of the site's
    resource, and the job's CPUs and memory on clusters sized for them (`ClusterTarget.cpu_memory`);
  * the gang waits `gang_ready_timeout_s` for its placement group, then the attempt fails cleanly
    ("could not be placed ...; nothing was held").

Resources a site's cluster advertises (checked through Ray's state API every INVENTORY_S):
  * `site:<name>` on the nodes of the site's shared pools (amount: their GPUs): every job there asks
    for it. A cluster that advertises neither it nor any `pool:<name>/...` makes the site unavailable
    (unless `require_site_resources` is off, for clusters that autoscale a site to zero nodes);
  * `pool:<site>/<pool>` (optional): jobs placed in the pool ask for it too, so they land on that
    pool's GPU model. Required on a *dedicated* pool's nodes, which advertise no `site:` resource:
    only work Gravity placed on the dedicated pool (inference) asks for it, batch work cannot land.

Where work goes, per site, first match wins:
  settings.site_addresses[site] > the catalog's `ray_address` for the site > settings.ray_address
  > the embedded local cluster (`ray_local.LocalRayCluster`), started only if some site needs it.
Sites that share an address share one client and one `list_jobs`. A site with no cluster at all
(possible only when targets are given directly) is unavailable.

Services (inference) run until cancelled. The launcher restarts a failed replica in its own bundle
(the reservation holds while the service lives) and prints HEALTH lines; for running services the
poller reads the end of the driver log every `health_poll_s` and reports changes as HEALTH events
(health, replicas ready, endpoints). Chosen over restarting replicas from the scheduler: no
re-placement, no capacity churn, and it keeps working while the scheduler is down.

Failures: the user's command decides the outcome (exit status and log tail flow back) unless the
launcher ends the attempt itself (its CAUSE line): gang not placeable in time, or a Ray worker or
node holding a rank died ("worker died: ..."): the attempt FAILED with that cause and no exit code,
retried by the service up to the job's max_retries. Attempts Ray never started or lost ("not
launched", "lost by Ray") are platform failures (`ExecEvent.infrastructure`), retried for free.

Threads: `launch` and `cancel` only queue work for a small pool; a poller thread lists every cluster
each `poll_s` (backing off exponentially, up to BACKOFF_MAX_S, from a cluster that does not answer
or answers 5xx), turns status changes into ExecEvents, fetches bounded log tails (Ray's state API,
`lines=N`) for finished jobs and running services, and resubmits what a down cluster did not take.
`poll`, `active` and `unavailable_sites` read memory only.

Unreachable clusters (connection refused or timed out, authentication refused, or UNAVAILABLE_AFTER
5xx answers in a row) make their sites unavailable until a later call succeeds. `launch()` to such a
site raises LaunchError(retryable=True); a launch whose submit could not even connect fails at once
("not launched", infrastructure: the scheduler places it again, elsewhere while the site is down);
one whose outcome is unknown (a read timeout, a 5xx) is resubmitted with the same id, never twice,
and fails "not launched" after `submit_give_up_s`. Jobs running on a cluster that stops answering
stay running in Gravity's eyes until it answers again (a partition must not run them twice).

Never run twice: a Ray job the executor has already reported as ended (given up, lost, cancelled
before Ray took it) that Ray lists as live is stopped; so is a live attempt of a job whose newer
attempt exists (superseded). After a scheduler restart the executor adopts every Gravity submission
on its clusters (metadata `gravity_job_id`); the service stops those it no longer wants with
`cancel(job_id)`. Memory stays bounded by what the clusters list: ids of ended submissions are
forgotten once their cluster no longer lists them.

Authentication: the embedded cluster uses its own random token (sent as a header). For a remote
cluster with token authentication set `ray_auth_token` (sent as `Authorization: Bearer`), or start
the scheduler with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, which Ray's client reads at import.
Closing the executor leaves running jobs running; only an embedded cluster it started is stopped.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import re
import shlex
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.exceptions
import requests
from ray.job_submission import JobSubmissionClient

from placers.catalog import Catalog, Pool
from placers.domain import JobKind, JobSpec, Placement
from scheduler.executors.base import ExecEvent, ExecEventKind, LaunchError, LaunchRequest
from scheduler.executors.gravity_gang.protocol import (
    PLAN_ENV,
    CauseKind,
    GangPlan,
    Health,
    RankSpec,
    split_output,
)
from scheduler.executors.ray_local import LocalRayCluster, pool_resource, site_resource
from scheduler.settings import ExecutorSettings

log = logging.getLogger("gravity.executor.ray")

HTTP_TIMEOUT_S = (3.05, 30.0)  # (connect, read) for every call to a dashboard
SUBMIT_WORKERS = 4
INFRASTRUCTURE_CAUSES = ("not launched", "lost by Ray")
LOST_AFTER_S = 60.0  # a submitted job its cluster no longer lists for this long is reported FAILED
ACTIVE_WAIT_S = 10.0  # active() waits this long at most for the first look at every cluster
ENDS_PER_SWEEP = 200  # finished jobs reported per look at a cluster (each needs a log fetch); the rest wait
HEALTH_PER_SWEEP = 50  # service health reads per sweep at most
INVENTORY_S = 30.0  # how often a cluster's advertised resources are read again
BACKOFF_MAX_S = 10.0  # longest pause before asking a failing cluster again
UNAVAILABLE_AFTER = 3  # failed answers (5xx) in a row that make a cluster's sites unavailable
FORGET_AFTER_S = LOST_AFTER_S  # an ended submission no longer listed by Ray is forgotten after this
HEALTH_TAIL_LINES = 60
GIB = 1024**3

LAUNCHER_DIR = Path(__file__).resolve().parent / "gravity_gang"
LAUNCHER_MODULE = "gravity_gang"

META_JOB = "gravity_job_id"
META_ATTEMPT = "gravity_attempt"
META_EPOCH = "gravity_epoch"
META_SITE = "gravity_site"
META_SERVICE = "gravity_service"

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
    """Where a site's jobs go: a Ray dashboard URL, extra HTTP headers (auth) for it, the Python
    that runs the launcher there, and whether the cluster is sized for jobs' CPUs and memory (False
    for a logical stand-in such as the embedded cluster, where only GPUs are accounted)."""

    address: str
    headers: Mapping[str, str] = field(default_factory=dict)
    python: str = "python"
    cpu_memory: bool = True

    @property
    def key(self) -> tuple[object, ...]:
        return (self.address, tuple(sorted(self.headers.items())), self.python, self.cpu_memory)


def resolve_addresses(ex: ExecutorSettings, catalog: Catalog) -> dict[str, str | None]:
    """Site -> Ray dashboard address; None for a site served by the embedded local cluster."""
    unknown = sorted(set(ex.site_addresses) - set(catalog.site_index))
    if unknown:
        raise ValueError(f"executor.site_addresses: unknown site(s) {', '.join(unknown)}")
    return {s.name: ex.site_addresses.get(s.name) or s.ray_address or ex.ray_address or None for s in catalog.sites}


def embedded_resources(catalog: Catalog, sites: Sequence[str]) -> dict[str, float]:
    """What the embedded cluster advertises for `sites`: `site:<name>` sized to the site's shared
    pools (capped by its burst quota), and `pool:<site>/<pool>` per pool."""
    out: dict[str, float] = {}
    for name in sites:
        site = catalog.site(name)
        shared = sum(p.max_gpus for p in site.pools if not p.dedicated)
        if site.burst_quota_gpus is not None:
            shared = min(shared, site.burst_quota_gpus)
        if shared:
            out[site_resource(name)] = float(shared)
        for p in site.pools:
            out[pool_resource(name, p.name)] = float(p.max_gpus)
    return out


def start_embedded(
    ex: ExecutorSettings, catalog: Catalog, sites: Sequence[str], *, wait: bool = True
) -> LocalRayCluster:
    """The local Ray for `sites` (see `embedded_resources`), with `ex.local_gpus` logical GPUs
    (0: Catalog.total_gpus summed over the sites)."""
    return LocalRayCluster.start(
        gpus=ex.local_gpus or sum(catalog.total_gpus(s) for s in sites),
        resources=embedded_resources(catalog, sites),
        wait=wait,
    )


# ====================================================================== the launch plan


def rank_gpus(spec: JobSpec, placement: Placement, pool: Pool) -> list[list[int]]:
    """Whole GPUs per rank, per replica: one rank per node the placement gives a replica."""
    g, replicas = spec.gpus, spec.replicas
    if spec.gpu_milli < 1000:
        return [[1] for _ in range(replicas)]
    if placement.bindings:
        groups: list[list[int]] = []
        current: list[int] = []
        need = g
        for b in placement.bindings:
            current.append(len(b.gpu_slots))
            need -= len(b.gpu_slots)
            if need <= 0:
                groups.append(current)
                current, need = [], g
        if len(groups) == replicas and not current and all(n > 0 for grp in groups for n in grp):
            return groups
        log.warning("bindings of %s do not add up to %d x %d GPUs; using the pool shape", spec.name, replicas, g)
    per_node = pool.gpus_per_node
    if spec.single_node or g <= per_node:
        return [[g] for _ in range(replicas)]
    chunks = [per_node] * (g // per_node) + ([g % per_node] if g % per_node else [])
    return [list(chunks) for _ in range(replicas)]


def gpu_resource_keys(pool: Pool, advertised: Mapping[str, float] | None) -> list[str]:
    """The site resources a rank of this pool asks for (see the module docstring)."""
    pool_key = pool_resource(pool.site, pool.name)
    if pool.dedicated:
        return [pool_key]
    keys = [site_resource(pool.site)]
    if advertised is not None and advertised.get(pool_key, 0) > 0:
        keys.append(pool_key)
    return keys


def gang_plan(
    request: LaunchRequest,
    catalog: Catalog,
    settings: ExecutorSettings,
    *,
    advertised: Mapping[str, float] | None = None,
    cpu_memory: bool = True,
) -> GangPlan:
    """The launcher's plan for one attempt: ranks, bundles, strategy (see the module docstring)."""
    spec, placement = request.spec, request.placement
    pool = catalog.pool(f"{placement.site}/{placement.pool}")
    share = spec.gpu_milli / 1000.0
    keys = gpu_resource_keys(pool, advertised)
    shapes = rank_gpus(spec, placement, pool)
    groups = []
    for ranks in shapes:
        group = []
        for n in ranks:
            gpus = round(n * share, 4)
            part = n / spec.gpus
            group.append(
                RankSpec(
                    gpus=gpus,
                    cpus=round(spec.cpus * part, 3) if cpu_memory else 0.0,
                    memory_bytes=int(spec.memory_gb * part * GIB) if cpu_memory else 0,
                    resources=dict.fromkeys(keys, gpus),
                )
            )
        groups.append(tuple(group))
    n_ranks = sum(len(g) for g in groups)
    spread = bool(spec.inference and spec.inference.spread)
    if n_ranks == 1:
        strategy = "STRICT_PACK"
    elif spread:
        strategy = "STRICT_SPREAD" if all(len(g) == 1 for g in groups) else "SPREAD"
    else:
        strategy = "PACK"
    return GangPlan(
        submission_id=request.launch_id,
        command=spec.entrypoint,
        groups=tuple(groups),
        strategy=strategy,
        ready_timeout_s=settings.gang_ready_timeout_s,
        service=spec.kind is JobKind.INFERENCE,
        restart_backoff_s=settings.restart_backoff_s,
        restart_backoff_max_s=settings.restart_backoff_max_s,
    )


def submission_args(request: LaunchRequest, plan: GangPlan, target: ClusterTarget) -> dict[str, Any]:
    """The keyword arguments of JobSubmissionClient.submit_job for one attempt."""
    spec, placement = request.spec, request.placement
    env = {str(k): str(v) for k, v in spec.env.items()}
    env.update(
        GRAVITY_JOB_ID=request.job_id,
        GRAVITY_ATTEMPT=str(request.attempt),
        GRAVITY_SITE=placement.site,
        GRAVITY_POOL=placement.pool,
        GRAVITY_GPU_MODEL=placement.gpu_model,
    )
    env[PLAN_ENV] = plan.to_json()
    return {
        "entrypoint": f"{shlex.quote(target.python)} -m {LAUNCHER_MODULE}",
        "submission_id": request.launch_id,
        "runtime_env": {"env_vars": env, "py_modules": [str(LAUNCHER_DIR)], "excludes": ["__pycache__"]},
        "metadata": {
            META_JOB: request.job_id,
            META_ATTEMPT: str(request.attempt),
            META_EPOCH: str(request.epoch),
            META_SITE: placement.site,
            META_SERVICE: "1" if plan.service else "0",
        },
        "entrypoint_num_cpus": 0,
    }


# ====================================================================== clusters


class _Client(JobSubmissionClient):
    """JobSubmissionClient with a timeout on every request (Ray's own calls have none)."""

    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return super()._do_request(method, endpoint, **kwargs)

    def driver_log_tail(self, submission_id: str, node_id: str, lines: int) -> str:
        """The last `lines` lines of a job's driver log, through Ray's state API (bounded); the whole
        log through the Job API when the node is not known or the state API cannot answer."""
        if node_id:
            query = urllib.parse.urlencode(
                {"node_id": node_id, "filename": f"job-driver-{submission_id}.log", "lines": lines}
            )
            r = self._do_request("GET", f"/api/v0/logs/file?{query}")
            if r.status_code == 200:
                return r.text
        text: str = self.get_job_logs(submission_id)
        return "\n".join(text.splitlines()[-lines:])

    def advertised(self) -> dict[str, float] | None:
        """Resources summed over the cluster's ALIVE nodes (Ray's state API); None while no node is
        listed yet (a head that has just started answers before its own node registers)."""
        r = self._do_request("GET", "/api/v0/nodes?detail=1&limit=10000")
        if r.status_code != 200:
            raise RuntimeError(f"listing nodes: status code {r.status_code}")
        totals: dict[str, float] = collections.defaultdict(float)
        alive = 0
        for node in r.json()["data"]["result"]["result"]:
            if node.get("state") == "ALIVE":
                alive += 1
                for key, amount in (node.get("resources_total") or {}).items():
                    totals[str(key)] += float(amount)
        return dict(totals) if alive else None


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
        self.advertised: dict[str, float] | None = None  # resources of its ALIVE nodes, None: not read yet
        self.inventory_at = -math.inf
        self.inventoried = threading.Event()  # the first inventory was tried
        self.failures = 0  # failed looks in a row
        self.retry_at = 0.0  # no look before this (backoff)
        self._client: _Client | None = None
        self._connect_lock = threading.Lock()

    def client(self) -> _Client:
        with self._connect_lock:
            if self._client is None:
                self._client = _Client(self.target.address, headers=dict(self.target.headers))
            return self._client

    def serves(self, site: str) -> bool:
        """Whether the cluster advertises resources for the site (True while not known)."""
        return self.advertised is None or _serves(self.advertised, site)


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
    service: bool = False
    plan: GangPlan | None = None
    seen_at: float = 0.0  # when Ray last listed it (or took it)
    started: bool = False
    stop_requested: bool = False
    stop_cause: str = "cancelled"  # what its STOPPED event says
    error: str = ""
    tries: int = 0  # submit calls that got an unclear answer
    retry_at: float = 0.0  # no resubmission before this
    driver_node_id: str = ""
    health: Health | None = None  # last reported
    health_at: float = -math.inf


@dataclass(frozen=True, slots=True)
class _Finish:
    """A terminal status seen by the poller; its event goes out once the log tail is fetched."""

    sub: _Submission
    kind: ExecEventKind
    at: float
    exit_code: int | None
    cause: str
    ran: bool  # the entrypoint started (a STARTED event precedes the terminal one)


def backoff_s(failures: int, base_s: float, cap_s: float = BACKOFF_MAX_S) -> float:
    """Pause after `failures` failed tries in a row: base, 2 x base, 4 x base, ... up to cap."""
    return float(min(cap_s, base_s * 2.0 ** max(0, failures - 1)))


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
        by_target: dict[tuple[object, ...], tuple[ClusterTarget, list[str]]] = {}
        for site, target in targets.items():
            by_target.setdefault(target.key, (target, []))[1].append(site)
        self._clusters = [_Cluster(t, sites) for t, sites in by_target.values()]
        self._site_cluster = {s: c for c in self._clusters for s in c.sites}  # the per-site map
        self._lock = threading.Lock()
        self._subs: dict[str, _Submission] = {}  # submission id -> not yet finished
        self._done: dict[str, tuple[_Cluster, float]] = {}  # submission id -> (cluster, when its end went out)
        self._events: collections.deque[ExecEvent] = collections.deque()
        self._ray_active: dict[str, int] = {}  # job id -> attempt, Ray PENDING/RUNNING at the last look
        self._cancelled: dict[str, float] = {}  # job id -> when Gravity cancelled it
        self._stopping: dict[str, _Cluster] = {}  # submission ids the executor asked Ray to stop
        self._newest: dict[str, int] = {}  # job id -> newest attempt seen (for superseded attempts)
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
            local = ClusterTarget(owned.address, owned.headers, python=sys.executable, cpu_memory=False)
            targets.update(dict.fromkeys(local_sites, local))
        headers = {"Authorization": f"Bearer {ex.ray_auth_token.get_secret_value()}"} if ex.ray_auth_token else {}
        for site, address in addresses.items():
            if address is not None:
                targets[site] = ClusterTarget(address, headers, python=ex.launcher_python)
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
            problem = _cannot_hold(request, self.catalog, cluster.advertised)
            if problem:
                raise LaunchError(problem, retryable=False, site=site)
            sub = _Submission(
                sid,
                request.job_id,
                request.attempt,
                site,
                cluster,
                request,
                _Phase.SUBMITTING,
                self.clock(),
                service=request.spec.kind is JobKind.INFERENCE,
            )
            self._subs[sid] = sub
            self._cancelled.pop(request.job_id, None)
            self._newest[request.job_id] = max(self._newest.get(request.job_id, -1), request.attempt)
        self._pool.submit(self._submit, sub)

    def cancel(self, job_id: str) -> None:
        to_stop: list[_Submission] = []
        with self._lock:
            self._cancelled[job_id] = self.clock()
            for sub in list(self._subs.values()):
                if sub.job_id != job_id or sub.phase is _Phase.DONE:
                    continue
                sub.stop_requested = True
                if sub.phase is _Phase.QUEUED:  # Ray did not take it (if it did after all, the poller stops it)
                    self._finish_locked(sub, ExecEventKind.STOPPED, self.clock(), None, "cancelled", "")
                elif sub.phase is _Phase.SUBMITTED:
                    to_stop.append(sub)
                    self._stopping[sub.submission_id] = sub.cluster
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
        """Sites with no cluster, with an unreachable cluster, or (require_site_resources) whose cluster
        advertises no resource for them."""
        with self._lock:
            down = {s for s in self.catalog.site_index if s not in self._site_cluster}
            for c in self._clusters:
                if c.reachable is False:
                    down.update(c.sites)
                elif self.settings.require_site_resources:
                    down.update(s for s in c.sites if not c.serves(s))
            return frozenset(down)

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
        cluster = sub.cluster
        if sub.plan is None:
            # The plan asks for the resources the cluster advertises: wait for its first inventory.
            cluster.inventoried.wait(ACTIVE_WAIT_S)
            with self._lock:
                advertised = cluster.advertised
            problem = _cannot_hold(sub.request, self.catalog, advertised)
            if problem:
                with self._lock:
                    self._finish_locked(sub, ExecEventKind.FAILED, self.clock(), None, problem, "")
                return
            sub.plan = gang_plan(
                sub.request, self.catalog, self.settings, advertised=advertised, cpu_memory=cluster.target.cpu_memory
            )
        with self._lock:
            if sub.stop_requested:
                self._finish_locked(sub, ExecEventKind.STOPPED, self.clock(), None, "cancelled", "")
                return
        try:
            client = cluster.client()  # its first call is a version check: nothing is submitted yet
        except _UNREACHABLE as exc:
            self._mark(cluster, False, exc)
            self._not_launched(sub, f"site {sub.site} unreachable: {_first_line(exc)}")
            return
        except Exception as exc:
            self._requeue(sub, f"Ray at {cluster.target.address} answered: {_first_line(exc)}")
            return
        try:
            client.submit_job(**submission_args(sub.request, sub.plan, cluster.target))
        except _UNREACHABLE as exc:
            self._mark(cluster, False, exc)
            why = f"site {sub.site} unreachable: {_first_line(exc)}"
            if _not_sent(exc):
                self._not_launched(sub, why)
            else:  # it may have reached Ray: submit again with the same id, never twice
                self._requeue(sub, why)
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
                self._stopping[sub.submission_id] = cluster
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
            self._stopping.pop(sub.submission_id, None)

    def _not_launched(self, sub: _Submission, why: str) -> None:
        """Ray certainly does not have it: fail now, so the scheduler places it again (elsewhere while
        the site is unavailable) instead of waiting for the cluster."""
        with self._lock:
            if sub.stop_requested:
                self._finish_locked(sub, ExecEventKind.STOPPED, self.clock(), None, "cancelled", "")
            elif sub.phase is not _Phase.DONE:
                self._finish_locked(sub, ExecEventKind.FAILED, self.clock(), None, f"not launched: {why}", "")

    def _requeue(self, sub: _Submission, why: str) -> None:
        with self._lock:
            if sub.phase is _Phase.DONE:
                return
            sub.error = why
            now = self.clock()
            if sub.stop_requested:
                self._finish_locked(sub, ExecEventKind.STOPPED, now, None, "cancelled", "")
            elif now - sub.queued_at >= self.settings.submit_give_up_s:
                self._finish_locked(sub, ExecEventKind.FAILED, now, None, f"not launched: {why}", "")
            else:
                sub.tries += 1
                sub.retry_at = now + backoff_s(sub.tries, self.settings.poll_s)
                sub.phase = _Phase.QUEUED

    def _mark(self, cluster: _Cluster, reachable: bool, exc: BaseException | str | None = None) -> None:
        with self._lock:
            if reachable:
                if cluster.reachable is False:
                    log.info("Ray at %s answers again (sites %s)", cluster.target.address, ", ".join(cluster.sites))
                cluster.reachable, cluster.error, cluster.failures, cluster.retry_at = True, "", 0, 0.0
            else:
                if cluster.reachable is not False:
                    log.warning(
                        "Ray at %s unreachable (sites %s): %s",
                        cluster.target.address,
                        ", ".join(cluster.sites),
                        _first_line(exc),
                    )
                cluster.reachable, cluster.error = False, _first_line(exc)

    def _failed_look(self, cluster: _Cluster, exc: BaseException, *, unreachable: bool) -> None:
        """A look at the cluster failed: back off; unreachable at once, or after UNAVAILABLE_AFTER failures."""
        with self._lock:
            cluster.failures += 1
            cluster.retry_at = time.monotonic() + backoff_s(cluster.failures, self.settings.poll_s)
            failures = cluster.failures
        if unreachable or failures >= UNAVAILABLE_AFTER:
            why = exc if unreachable else f"{failures} failed answers in a row: {_first_line(exc)}"
            self._mark(cluster, False, why)
        else:
            log.warning("list_jobs at %s failed: %s", cluster.target.address, _first_line(exc))

    # ================================================================== the poller

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sweep()
            except Exception:  # the poller must survive anything; it tries again next tick
                log.exception("Ray poll failed")
            self._stop.wait(self.settings.poll_s)

    def _sweep(self) -> None:
        listings: list[tuple[_Cluster, Sequence[Any]]] = []
        for cluster in self._clusters:
            if self._stop.is_set():
                return
            if time.monotonic() < cluster.retry_at:
                continue
            try:
                jobs: Sequence[Any] = cluster.client().list_jobs()
            except _UNREACHABLE as exc:
                self._failed_look(cluster, exc, unreachable=True)
                continue
            except Exception as exc:  # it answered, but not with a list (5xx, say): back off
                self._failed_look(cluster, exc, unreachable=False)
                continue
            self._mark(cluster, True)
            self._read_inventory(cluster)
            listings.append((cluster, jobs))
        with self._lock:
            for _, jobs in listings:  # newest attempt per job, over every cluster (superseded attempts)
                for d in jobs:
                    meta = d.metadata or {}
                    job_id = meta.get(META_JOB)
                    if d.submission_id and job_id:
                        attempt = _int(meta.get(META_ATTEMPT), -1)
                        self._newest[job_id] = max(self._newest.get(job_id, -1), attempt)
        for cluster, jobs in listings:
            self._reconcile(cluster, jobs)
        self._read_health()
        self._resubmit()
        self._forget()
        if all(c.listed or c.reachable is False for c in self._clusters):
            self._first_sweep.set()

    def _read_inventory(self, cluster: _Cluster) -> None:
        now = time.monotonic()
        if cluster.advertised and now - cluster.inventory_at < INVENTORY_S:
            return
        if not cluster.advertised and now - cluster.inventory_at < max(1.0, self.settings.poll_s):
            return
        cluster.inventory_at = now
        try:
            found = cluster.client().advertised()
        except Exception as exc:  # an older Ray without the state API, say: keep what we had
            log.warning("cannot read the resources of Ray at %s: %s", cluster.target.address, _first_line(exc))
            cluster.inventoried.set()
            return
        if found is None:
            return  # no node registered yet: ask again next sweep
        with self._lock:
            before = cluster.advertised
            cluster.advertised = found
        cluster.inventoried.set()
        missing = [s for s in cluster.sites if not cluster.serves(s)]
        if missing and (before is None or [s for s in cluster.sites if not _serves(before, s)] != missing):
            log.warning(
                "Ray at %s advertises no resource for site(s) %s (expected site:<name> or pool:<name>/<pool>)",
                cluster.target.address,
                ", ".join(missing),
            )

    def _reconcile(self, cluster: _Cluster, jobs: Sequence[Any]) -> None:
        now = self.clock()
        finishes: list[_Finish] = []
        stops: list[_Submission] = []
        live: dict[str, int] = {}
        listed: set[str] = set()
        adopted = 0
        with self._lock:
            for d in jobs:
                sid, meta = d.submission_id, d.metadata or {}
                job_id = meta.get(META_JOB)
                if not sid or not job_id:
                    continue  # not ours (a plain driver, or another tool's job)
                listed.add(sid)
                status = str(getattr(d.status, "value", d.status))
                attempt = _int(meta.get(META_ATTEMPT), -1)
                sub = self._subs.get(sid)
                if status in _LIVE:
                    live[job_id] = max(live.get(job_id, -1), attempt)
                    why = ""
                    if job_id in self._cancelled:
                        why = "cancelled"
                    elif sid in self._done:
                        why = "Gravity already counted this attempt as ended"
                    elif attempt < self._newest.get(job_id, -1):
                        why = f"superseded by attempt {self._newest[job_id]}"
                    if why and sid not in self._stopping:
                        log.warning("stopping Ray job %s at %s: %s", sid, cluster.target.address, why)
                        self._stopping[sid] = cluster
                        stop = sub or _Submission(sid, job_id, attempt, "", cluster, None, _Phase.DONE, now)
                        stop.stop_requested, stop.stop_cause = True, why
                        stops.append(stop)
                elif status in _TERMINAL:
                    self._stopping.pop(sid, None)
                if sid in self._done:
                    continue
                if sub is None:  # launched before a restart, or by another Gravity process
                    site = str(meta.get(META_SITE, ""))
                    service = meta.get(META_SERVICE) == "1"
                    sub = _Submission(sid, job_id, attempt, site, cluster, None, _Phase.SUBMITTED, now, service=service)
                    self._subs[sid] = sub
                    adopted += 1
                if sub.phase is not _Phase.SUBMITTED:
                    continue  # our own submit call has not returned yet, or its end is being reported
                sub.seen_at = now
                sub.driver_node_id = str(getattr(d, "driver_node_id", "") or "")
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
            for sid, (c, ended_at) in list(self._done.items()):
                if c is cluster and sid not in listed and now - ended_at >= FORGET_AFTER_S:
                    del self._done[sid]  # Ray forgot it too: bounded by what the cluster keeps
            for sid, c in list(self._stopping.items()):
                if c is cluster and sid not in listed:
                    del self._stopping[sid]
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
            kind, exit_code, cause, tail = self._outcome(f)
            with self._lock:
                if f.ran and not f.sub.started:
                    f.sub.started = True
                    self._events.append(ExecEvent(f.sub.job_id, f.sub.attempt, ExecEventKind.STARTED, f.at))
                self._finish_locked(f.sub, kind, f.at, exit_code, cause, tail)

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
                return _Finish(sub, ExecEventKind.STOPPED, at, code, sub.stop_cause, ran)
            return _Finish(sub, ExecEventKind.FAILED, at, code, f"stopped outside Gravity: {message}", ran)
        error = str(getattr(d, "error_type", None) or "")
        cause = message.split(", last available logs")[0].rstrip(":") or (
            f"exit code {code}" if code is not None else "failed"
        )
        return _Finish(sub, ExecEventKind.FAILED, at, code, f"{cause} ({error})" if error else cause, ran)

    def _outcome(self, f: _Finish) -> tuple[ExecEventKind, int | None, str, str]:
        """The event of a finished job: its log tail (protocol lines dropped), and the launcher's cause
        when the launcher, not the command, ended the attempt."""
        lines = self._log_lines(f.sub, 3 * self.settings.log_tail_lines + 20)
        out = split_output(lines)
        tail = "\n".join(out.user_lines[-self.settings.log_tail_lines :])
        launcher = out.cause()
        if f.kind is ExecEventKind.FAILED and launcher is not None:
            kind, text = launcher
            return ExecEventKind.FAILED, None, text if kind is not CauseKind.LAUNCHER else f"launcher: {text}", tail
        return f.kind, f.exit_code, f.cause, tail

    def _log_lines(self, sub: _Submission, n: int) -> list[str]:
        try:
            text = sub.cluster.client().driver_log_tail(sub.submission_id, sub.driver_node_id, n)
        except Exception as exc:  # logs are best effort: the event goes out without them
            log.warning("no logs for %s: %s", sub.submission_id, _first_line(exc))
            return []
        ours = f"Running entrypoint for job {sub.submission_id}: "
        return [x for x in str(text).splitlines() if not x.startswith(ours) and not _RAY_PREAMBLE.match(x)]

    def _read_health(self) -> None:
        """Read the newest HEALTH line of running services, HEALTH_PER_SWEEP at most, each every health_poll_s."""
        now = self.clock()
        with self._lock:
            due = [
                s
                for s in self._subs.values()
                if s.service
                and s.started
                and s.phase is _Phase.SUBMITTED
                and s.cluster.reachable is not False
                and now - s.health_at >= self.settings.health_poll_s
            ]
            due.sort(key=lambda s: s.health_at)
            due = due[:HEALTH_PER_SWEEP]
            for s in due:
                s.health_at = now
        for sub in due:
            health = split_output(self._log_lines(sub, HEALTH_TAIL_LINES)).health()
            with self._lock:
                if health is None or health == sub.health or sub.phase is not _Phase.SUBMITTED:
                    continue
                sub.health = health
                self._events.append(
                    ExecEvent(
                        sub.job_id,
                        sub.attempt,
                        ExecEventKind.HEALTH,
                        self.clock(),
                        health=str(health.state),
                        replicas_ready=health.ready,
                        endpoint=",".join(health.endpoints),
                    )
                )

    def _resubmit(self) -> None:
        again: list[_Submission] = []
        with self._lock:
            now = self.clock()
            for sub in list(self._subs.values()):
                if sub.phase is not _Phase.QUEUED:
                    continue
                if now - sub.queued_at >= self.settings.submit_give_up_s:
                    self._finish_locked(sub, ExecEventKind.FAILED, now, None, f"not launched: {sub.error}", "")
                elif sub.cluster.reachable is not False and now >= sub.retry_at:
                    sub.phase = _Phase.SUBMITTING
                    again.append(sub)
        for sub in again:
            self._pool.submit(self._submit, sub)

    def _forget(self) -> None:
        """Bounded memory: drop cancellations and attempt counters of jobs nothing runs any more."""
        with self._lock:
            now = self.clock()
            busy = {s.job_id for s in self._subs.values()} | set(self._ray_active)
            for job_id, at in list(self._cancelled.items()):
                if job_id not in busy and now - at >= FORGET_AFTER_S:
                    del self._cancelled[job_id]
            if len(self._newest) > 2 * (len(busy) + len(self._done)) + 1000:
                listed_jobs = busy | {s.job_id for s in self._subs.values()}
                self._newest = {j: n for j, n in self._newest.items() if j in listed_jobs}

    def _finish_locked(
        self, sub: _Submission, kind: ExecEventKind, at: float, exit_code: int | None, cause: str, tail: str
    ) -> None:
        sub.phase = _Phase.DONE
        self._subs.pop(sub.submission_id, None)
        self._done[sub.submission_id] = (sub.cluster, self.clock())
        # An attempt that never started, or that Ray lost, failed for platform reasons: retried for free.
        infrastructure = kind is ExecEventKind.FAILED and cause.startswith(INFRASTRUCTURE_CAUSES)
        self._events.append(ExecEvent(sub.job_id, sub.attempt, kind, at, exit_code, tail, cause, infrastructure))


def _cannot_hold(request: LaunchRequest, catalog: Catalog, advertised: Mapping[str, float] | None) -> str:
    """Why the cluster cannot hold this launch at all ("" when it can, or while not known): a dedicated
    pool needs its pool resource, or batch work could take its capacity."""
    site = request.placement.site
    pool = catalog.pool(f"{site}/{request.placement.pool}")
    key = pool_resource(site, pool.name)
    if pool.dedicated and advertised is not None and advertised.get(key, 0) <= 0:
        return f"the Ray cluster of site {site} advertises no {key} resource: dedicated capacity cannot be held there"
    return ""


def _serves(advertised: Mapping[str, float], site: str) -> bool:
    """Whether a cluster advertising these resources serves the site (site:<name> or pool:<name>/...)."""
    prefix = f"pool:{site}/"
    return advertised.get(site_resource(site), 0) > 0 or any(
        k.startswith(prefix) and v > 0 for k, v in advertised.items()
    )


def _not_sent(exc: BaseException) -> bool:
    """Whether a failed call certainly never reached Ray (no connection was made)."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, *_AUTH_ERRORS)):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "NewConnectionError" in repr(exc.args) or "Connection refused" in str(exc)
    return False


def _first_line(value: object) -> str:
    text = str(value).strip()
    first = text.splitlines()[0] if text else ""
    context = getattr(value, "__context__", None)
    if isinstance(value, ConnectionError) and isinstance(context, requests.exceptions.RequestException):
        return f"{first} ({_first_line(context)})"  # Ray's client hides what went wrong in the context
    return first


def _http_status(text: str) -> int | None:
    m = _STATUS_CODE.search(text)
    return int(m.group(1)) if m else None


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default
