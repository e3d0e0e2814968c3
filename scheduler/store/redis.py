"""The Redis store: all of Gravity's state in Redis, shared by every replica, kept across restarts.

Same semantics as MemoryStore (tests/contract/test_store.py runs one suite against both); what
differs is where the truth lives and how it stays consistent:

* Every write is one Lua script (scheduler/store/redis_scripts.py), so it is atomic and one round
  trip. Python computes the new records with the shared state machine (transitions.py); a script
  only checks and applies. A job's compare-and-set token "rev:state:attempts:tag" guards it against a
  concurrent writer; the plan version guards capacity (a plan from a stale snapshot is refused,
  nothing applied); the leader epoch fences a deposed leader's commits and launches.
* A write has been applied in Redis (and handed to its AOF) when the call returns: SubmitJob
  answers after that. deploy/README.md explains what each AOF fsync policy keeps on a power loss.
* Capacity is derived from the allocations (job -> placement + demand), never stored twice. Each
  store instance mirrors them and follows the allocation log (one entry per version), so a
  snapshot is one round trip however many jobs run; a mirror that fell behind the log reloads.
* Connection failures raise StoreError (gRPC UNAVAILABLE; a retry with the same request_id is
  safe). Records of an unknown schema version raise SchemaError naming the record.

`round_trips` counts requests sent to Redis (for benchmarks/bench_store.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from placers.capacity import CapacityState, Demand
from placers.catalog import Catalog
from placers.domain import Job, JobSpec, JobState, Placement
from scheduler.finops.model import AuditEntry, AuditQuery, Budget, BudgetAlert, VersionMismatch
from scheduler.store import codec
from scheduler.store import redis_scripts as lua
from scheduler.store.base import (
    ClaimVerdict,
    EventKind,
    JobEvent,
    JobQuery,
    JobUpdate,
    LaunchClaim,
    Plan,
    SchemaError,
    Snapshot,
    StoreError,
)
from scheduler.store.keys import DEFAULT_PREFIX, REPLICA_SEPARATOR, Keys
from scheduler.store.memory import EVENT_HISTORY  # events kept (here about: a stream is trimmed by whole nodes)
from scheduler.store.transitions import apply_update, matches, placed, rejected, waiting

log = logging.getLogger("gravity.store.redis")

ALLOC_LOG_KEEP = 20_000  # allocation-log entries kept; a mirror further behind reloads all allocations
LAUNCH_LOG_KEEP = 1_000_000
SUBMIT_CHUNK = 1_000  # jobs per submit script (one pipeline carries all chunks of a call)
MAX_CAS_TRIES = 50  # re-reads of a job whose token moved under an update before giving up
CACHE_MAX = 50_000  # decoded jobs (and specs, placements) kept per instance: the active working set
BLOCK_S = 1.0  # longest single XREAD BLOCK of events(); the caller's timeout is served in slices
AUDIT_CHUNK = 1_000  # audit entries read per round trip

# Replies that mean "Redis cannot serve this now" rather than a bug: surfaced as StoreError.
_UNAVAILABLE_REPLIES = (
    "LOADING", "READONLY", "MASTERDOWN", "MISCONF", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "OOM", "BUSY",
)  # fmt: skip


@dataclass
class _Mirror:
    """This instance's copy of the committed allocations and the capacity they leave, at `version`."""

    version: int
    capacity: CapacityState
    placements: dict[str, Placement] = field(default_factory=dict)
    demands: dict[str, Demand] = field(default_factory=dict)


def _token(rev: int, job: Job) -> str:
    """A job's compare-and-set token: revision, state and attempt count, plus a random tag so that a
    revision number reused after Redis lost its last writes (power loss) never looks current."""
    return f"{rev}:{job.state.value}:{len(job.attempts)}:{secrets.token_hex(3)}"


def _next_token(token: str, job: Job) -> str:
    return _token(int(token.split(":", 1)[0]) + 1, job)


def _tier(priority: int) -> int:
    """Queue tier: lower goes first, so higher priority -> lower tier."""
    if not -lua.PRIORITY_LIMIT < priority < lua.PRIORITY_LIMIT:
        raise ValueError(
            f"priority {priority}: the Redis queue orders priorities within "
            f"{-lua.PRIORITY_LIMIT + 1}..{lua.PRIORITY_LIMIT - 1}"
        )
    return lua.PRIORITY_LIMIT - priority


class RedisStore:
    def __init__(
        self,
        catalog: Catalog,
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        event_history: int = EVENT_HISTORY,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 5.0,
    ) -> None:
        self.catalog = catalog
        self.keys = Keys(key_prefix)
        self.event_history = event_history
        self._where = _redact(url)
        try:
            # Typed Any: with decode_responses=True every reply is str, which redis-py's stubs cannot say.
            self._r: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=command_timeout_s,
                # No silent retries: a script whose reply was lost may have been applied. The caller
                # decides (idempotent submit by request_id; the cycle re-reads and recovers).
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ValueError(f"store_url {self._where!r}: {exc}") from None
        self._block_s = min(BLOCK_S, command_timeout_s / 2)
        self._submit = self._r.register_script(lua.SUBMIT)
        self._commit = self._r.register_script(lua.COMMIT)
        self._update = self._r.register_script(lua.UPDATE)
        self._claim = self._r.register_script(lua.CLAIM)
        self._acquire = self._r.register_script(lua.ACQUIRE)
        self._release = self._r.register_script(lua.RELEASE)
        self._pending = self._r.register_script(lua.PENDING)
        self._pending_since = self._r.register_script(lua.PENDING_SINCE)
        self._readjobs = self._r.register_script(lua.READ)
        self._put_budget = self._r.register_script(lua.PUT_BUDGET)
        self._delete_budget = self._r.register_script(lua.DELETE_BUDGET)
        self._record_alert = self._r.register_script(lua.RECORD_ALERT)
        k = self.keys
        self._write_keys = [
            k.jobs, k.token, k.queue, k.counts, k.seq, k.events, k.job_events,
            k.order, k.version, k.alloc, k.alloc_log, k.leader, k.state_prefix,
        ]  # fmt: skip
        self._schema_ok = False
        self._cache: dict[str, tuple[str, Job]] = {}  # job id -> (token, job at that token)
        self._specs: dict[str, JobSpec] = {}  # job id -> spec (immutable)
        self._placements: dict[str, tuple[Placement, str]] = {}  # job id -> placement, encoded
        self._mirror: _Mirror | None = None
        self._mirror_lock = threading.Lock()
        self._rt_lock = threading.Lock()
        self._round_trips = 0
        self._round_trips_by: Counter[str] = Counter()
        self._warned_pools: set[str] = set()

    # ================================================================== plumbing

    @property
    def round_trips(self) -> int:
        """Requests sent to Redis so far by this instance (a pipeline or a script is one)."""
        return self._round_trips

    @property
    def round_trips_by_call(self) -> Mapping[str, int]:
        """`round_trips` split by what they were for (submit, commit, snapshot, ...)."""
        return dict(self._round_trips_by)

    def wipe(self) -> int:
        """Delete every key of this store's prefix (benchmarks, tests, decommissioning). Returns how many."""
        with self._io("wipe"):
            n = int(self._r.delete(*self.keys.all()))
        self._schema_ok = False
        self._cache.clear()
        self._specs.clear()
        self._placements.clear()
        with self._mirror_lock:
            self._mirror = None
        return n

    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[None]:
        with self._rt_lock:
            self._round_trips += 1
            self._round_trips_by[what] += 1
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Connections made before an outage are dead: drop the idle ones, so the next call reconnects.
            self._r.connection_pool.disconnect(inuse_connections=False)
            raise StoreError(f"Redis at {self._where} unavailable ({what}): {exc}") from None
        except redis.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise StoreError(f"Redis at {self._where} cannot serve {what} now: {exc}") from None
            raise

    def _eval_many(self, what: str, script: Any, keys: list[str], calls: list[list[Any]]) -> list[Any]:
        """Run one script once per argument list, all in one pipeline: one round trip.

        (redis-py's own pipelined scripts ask SCRIPT EXISTS first, a second round trip; here a
        NOSCRIPT reply - only after a Redis restart - loads the script and resends just those calls.)
        """
        if len(calls) == 1:
            with self._io(what):
                try:
                    return [script(keys=keys, args=calls[0], client=self._r)]
                except redis.ResponseError as exc:
                    if isinstance(exc, redis.exceptions.NoScriptError):
                        raise
                    return [exc]
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            with self._io(what):
                pipe = self._r.pipeline(transaction=False)
                for i in todo:
                    pipe.evalsha(script.sha, len(keys), *keys, *calls[i])
                got = pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, got, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(i)
                replies[i] = reply
            if not missing:
                break
            with self._io(what):
                self._r.script_load(script.script)
            todo = missing
        return replies

    def check(self) -> None:
        """Claim an empty database for this schema version, or verify the one found (SchemaError)."""
        if self._schema_ok:
            return
        with self._io("schema check"):
            pipe = self._r.pipeline(transaction=True)
            pipe.setnx(self.keys.schema, codec.SCHEMA_VERSION)
            pipe.get(self.keys.schema)
            _, found = pipe.execute()
        if str(found) != str(codec.SCHEMA_VERSION):
            raise SchemaError(
                f"Redis at {self._where}, key {self.keys.schema}: the store holds schema version {found!r}; "
                f"this Gravity reads version {codec.SCHEMA_VERSION}. Run the Gravity that wrote it, migrate, "
                "or use another key prefix (store.key_prefix)."
            )
        self._schema_ok = True

    def _remember(self, job_id: str, token: str, job: Job) -> None:
        if len(self._cache) >= CACHE_MAX:
            for stale in list(self._cache)[: CACHE_MAX // 2]:  # oldest half (insertion order)
                self._cache.pop(stale, None)
        if len(self._specs) >= CACHE_MAX:
            for stale in list(self._specs)[: CACHE_MAX // 2]:
                self._specs.pop(stale, None)
        self._cache[job_id] = (token, job)
        self._specs[job_id] = job.spec

    def _placement_json(self, job_id: str, placement: Placement | None) -> str | None:
        """The job's placement encoded, once per placement (transitions of a running job reuse it)."""
        if placement is None:
            self._placements.pop(job_id, None)
            return None
        return self._encoded_placement(job_id, placement)

    def _encoded_placement(self, job_id: str, placement: Placement) -> str:
        hit = self._placements.get(job_id)
        if hit is not None and (hit[0] is placement or hit[0] == placement):
            return hit[1]
        if len(self._placements) >= CACHE_MAX:
            for stale in list(self._placements)[: CACHE_MAX // 2]:
                self._placements.pop(stale, None)
        encoded = codec.encode_placement(placement)
        self._placements[job_id] = (placement, encoded)
        return encoded

    def _spec(self, job_id: str, raw: str | None) -> JobSpec:
        spec = self._specs.get(job_id)
        if spec is None:
            if raw is None:  # evicted from the cache since the caller looked: fetch it
                with self._io("read specs"):
                    raw = self._r.hget(self.keys.specs, job_id)
            if raw is None:
                raise SchemaError(f"job {job_id}: no spec in {self.keys.specs}")
            spec = codec.decode_spec(raw, f"spec of job {job_id} in {self.keys.specs}")
            self._specs[job_id] = spec
        return spec

    def _decode(self, job_id: str, token: str, status: str, spec: str | None = None) -> Job:
        hit = self._cache.get(job_id)
        if hit is not None and hit[0] == token:
            return hit[1]
        job = codec.decode_status(status, self._spec(job_id, spec), f"job {job_id} in {self.keys.jobs}")
        self._remember(job_id, token, job)
        return job

    def _read(self, job_ids: Sequence[str], *, whole: bool = False) -> dict[str, tuple[str, Job]]:
        """The current (token, job) of each existing job, read atomically in one round trip.

        Only what this instance lacks travels: a job's status when its token moved since this
        instance last saw it (`whole`: always), its spec (which never changes) when it never saw
        the job."""
        if not job_ids:
            return {}
        self.check()
        ids = list(dict.fromkeys(job_ids))
        args: list[Any] = [len(ids)]
        for i in ids:
            hit = None if whole else self._cache.get(i)
            args += [i, hit[0] if hit is not None else "", "0" if i in self._specs else "1"]
        k = self.keys
        with self._io("read jobs"):
            reply = self._readjobs(keys=[k.token, k.jobs, k.specs], args=args, client=self._r)
        out: dict[str, tuple[str, Job]] = {}
        again: list[str] = []
        for n, job_id in enumerate(ids):
            token, status, spec = reply[3 * n : 3 * n + 3]
            if not token:
                continue
            hit = self._cache.get(job_id)
            if not status and (hit is None or hit[0] != token):
                again.append(job_id)  # another thread of ours replaced the cached version meanwhile
            else:
                out[job_id] = (token, self._decode(job_id, token, status, spec or None))
        if again:
            out.update(self._read(again, whole=True))
        return out

    def _specs_for(self, job_ids: Sequence[str]) -> None:
        """Make sure the spec of each job is known here (one round trip for those that are not)."""
        unseen = list(dict.fromkeys(i for i in job_ids if i not in self._specs))
        if unseen:
            with self._io("read specs"):
                raw = self._r.hmget(self.keys.specs, unseen)
            for job_id, r in zip(unseen, raw, strict=True):
                if r is not None:
                    self._spec(job_id, r)

    # ================================================================== writes

    def submit(self, jobs: Sequence[Job]) -> list[tuple[Job, bool]]:
        self.check()
        if not jobs:
            return []
        chunks = [jobs[i : i + SUBMIT_CHUNK] for i in range(0, len(jobs), SUBMIT_CHUNK)]
        tokens = {job.id: _token(1, job) for job in jobs}
        calls: list[list[Any]] = []
        for chunk in chunks:
            args: list[Any] = [self.event_history, lua.TIER_SHIFT, len(chunk)]
            for job in chunk:
                args += [
                    job.id,
                    job.spec.request_id,
                    codec.encode_spec(job.spec),
                    codec.encode_status(job),
                    _tier(job.spec.priority),
                    repr(job.created_at),
                    tokens[job.id],
                ]
            calls.append(args)
        replies = self._eval_many(
            "submit",
            self._submit,
            [*self._write_keys, self.keys.requests, self.keys.submitted, self.keys.specs],
            calls,
        )
        out: list[tuple[Job, bool]] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, redis.ResponseError) and "duplicate job id" in str(reply):
                raise ValueError(str(reply))
            if isinstance(reply, Exception):
                raise reply
            for i, job in enumerate(chunk):
                created, job_id, status, spec, token = reply[5 * i : 5 * i + 5]
                if int(created):
                    self._remember(job.id, tokens[job.id], job)
                    out.append((job, True))
                else:
                    out.append((self._decode(job_id, token, status, spec), False))
        return out

    def commit(self, plan: Plan) -> bool:
        decided = [*plan.placements, *plan.rejections]
        current = self._read([*decided, *plan.waits])
        for job_id in decided:
            entry = current.get(job_id)
            if entry is None or entry[1].state is not JobState.PENDING:
                return False
        args: list[Any] = []
        written: list[tuple[str, str, Job]] = []
        adds: dict[str, str] = {}
        for job_id, placement in plan.placements.items():
            token, job = current[job_id]
            new = placed(job, placement, plan.decided_at)
            new_token = _next_token(token, new)
            where = self._encoded_placement(job_id, placement)
            adds[job_id] = codec.encode_allocation(where, Demand.of(job.spec))
            args += [
                job_id,
                token,
                new_token,
                codec.encode_status(new, where),
                adds[job_id],
                repr(placement.start_at),
            ]
            written.append((job_id, new_token, new))
        for job_id, reason in plan.rejections.items():
            token, job = current[job_id]
            new = rejected(job, reason, plan.decided_at)
            new_token = _next_token(token, new)
            args += [job_id, token, new_token, codec.encode_status(new), repr(plan.decided_at)]
            written.append((job_id, new_token, new))
        n_wait = 0
        for job_id, reason in plan.waits.items():
            entry = current.get(job_id)
            new_or_none = waiting(entry[1], reason, plan.decided_at) if entry is not None else None
            if entry is None or new_or_none is None:
                continue
            new_token = _next_token(entry[0], new_or_none)
            args += [job_id, entry[0], new_token, codec.encode_status(new_or_none), repr(plan.decided_at)]
            n_wait += 1
        replicas = [Keys.replica_field(d, s) for d, sites in plan.new_replicas.items() for s in sites]
        payload = codec.allocation_log_entry(adds, ()) if decided else ""
        head: list[Any] = [
            plan.base_version,
            plan.epoch,
            self.event_history,
            ALLOC_LOG_KEEP,
            payload,
            repr(float(plan.replica_expires_at)),
            len(plan.placements),
            len(plan.rejections),
            n_wait,
            len(replicas),
        ]
        with self._io("commit"):
            verdict = self._commit(
                keys=[*self._write_keys, self.keys.replicas, *self.keys.audit_keys],
                args=[*head, *args, *replicas, *codec.audit_args(plan.audit)],
                client=self._r,
            )
        if not isinstance(verdict, list):
            log.debug("plan at version %d refused: %s", plan.base_version, verdict)
            return False
        for job_id, token, job in written:
            self._remember(job_id, token, job)
        self._mirror_own_commit(plan, int(verdict[1]), current)
        return True

    def _mirror_own_commit(self, plan: Plan, version: int, jobs: Mapping[str, tuple[str, Job]]) -> None:
        """Apply our own committed allocations to the mirror, so the next snapshot need not decode them."""
        with self._mirror_lock:
            mirror = self._mirror
            if (
                mirror is None
                or mirror.version != plan.base_version
                or version != plan.base_version + bool(plan.placements or plan.rejections)
            ):
                return  # someone else's writes are in between: the allocation log will tell
            for job_id, placement in plan.placements.items():
                self._take(mirror, job_id, placement, Demand.of(jobs[job_id][1].spec))
            mirror.version = version

    def update(self, update: JobUpdate) -> Job | None:
        return self.update_many([update])[0]

    def update_many(self, updates: Sequence[JobUpdate]) -> list[Job | None]:
        results: list[Job | None] = [None] * len(updates)
        todo = list(range(len(updates)))
        for _ in range(MAX_CAS_TRIES):
            if not todo:
                break
            view = self._read([updates[i].job_id for i in todo])
            args: list[Any] = []
            sent: list[tuple[int, str, Job]] = []
            for i in todo:
                u = updates[i]
                entry = view.get(u.job_id)
                if entry is None:
                    continue
                token, job = entry
                change = apply_update(job, u)
                if change is None:
                    continue
                new, kind = change
                new_token = _next_token(token, new)
                release = job.state.holds_capacity and not new.state.holds_capacity
                payload = codec.allocation_log_entry({}, (job.id,)) if release else ""
                args += [
                    u.job_id,
                    token,
                    new_token,
                    codec.encode_status(new, self._placement_json(new.id, new.placement)),
                    job.state.value,
                    new.state.value,
                    kind.value,
                    repr(u.at),
                    "1" if release else "0",
                    _tier(new.spec.priority),
                    payload,
                    *codec.audit_args(u.audit),
                ]
                sent.append((i, new_token, new))
                view[u.job_id] = (new_token, new)  # a later update of the same job builds on this one
            if not sent:
                break
            with self._io("update"):
                applied = self._update(
                    keys=[*self._write_keys, *self.keys.audit_keys],
                    args=[self.event_history, ALLOC_LOG_KEEP, lua.TIER_SHIFT, len(sent), *args],
                    client=self._r,
                )
            todo = []
            for (i, token, new), ok in zip(sent, applied, strict=True):
                if int(ok):
                    results[i] = new
                    self._remember(new.id, token, new)
                else:
                    todo.append(i)
        else:
            raise StoreError(f"updates of {len(todo)} jobs kept conflicting with other writers; retry")
        return results

    # ================================================================== leadership and launches

    def claim_launches(self, epoch: int, claims: Sequence[tuple[str, int]]) -> list[LaunchClaim]:
        if not claims:
            return []
        self.check()
        args: list[Any] = [epoch, repr(time.time()), LAUNCH_LOG_KEEP, len(claims)]
        for job_id, attempt in claims:
            args += [job_id, attempt]
        k = self.keys
        with self._io("claim launches"):
            reply = self._claim(keys=[k.leader, k.token, k.jobs, k.launches, k.launch_log], args=args, client=self._r)
        rows = [reply[4 * i : 4 * i + 4] for i in range(len(claims))]
        self._specs_for([job_id for (job_id, _), row in zip(claims, rows, strict=True) if row[2]])
        out = []
        for (job_id, attempt), (verdict, holder, status, token) in zip(claims, rows, strict=True):
            job = self._decode(job_id, token, status) if status else None
            out.append(LaunchClaim(job_id, attempt, ClaimVerdict(verdict), job, int(holder)))
        return out

    def acquire_lease(self, holder: str, ttl_s: float) -> int:
        self.check()
        with self._io("leader lease"):
            epoch = self._acquire(
                keys=[self.keys.leader, self.keys.epoch], args=[holder, max(1, round(ttl_s * 1000))], client=self._r
            )
        return int(epoch)

    def release_lease(self, holder: str) -> None:
        with self._io("leader lease"):
            self._release(keys=[self.keys.leader], args=[holder], client=self._r)

    def launch_log(self) -> list[tuple[str, int, int, float]]:
        """Every granted launch claim, oldest first: (job id, attempt, epoch, Unix seconds). For audits."""
        with self._io("launch log"):
            rows = self._r.lrange(self.keys.launch_log, 0, -1)
        out = []
        for row in rows:
            launch, epoch, at = row.split(" ")
            job_id, _, attempt = launch.rpartition("#")
            out.append((job_id, int(attempt), int(epoch), float(at)))
        return out

    # ================================================================== FinOps: budgets, alerts, audit

    def put_budget(self, budget: Budget, expected_version: int, audit: AuditEntry | None = None) -> Budget:
        self.check()
        stored = dataclasses.replace(budget, version=expected_version + 1)
        k = self.keys
        with self._io("put budget"):
            verdict, version = self._put_budget(
                keys=[k.budgets, *k.audit_keys],
                args=[
                    budget.id,
                    expected_version,
                    codec.encode_budget(stored),
                    *codec.audit_args([audit] if audit else []),
                ],
                client=self._r,
            )
        if verdict != "ok":
            raise VersionMismatch(f"budget {budget.id}", expected_version, int(version))
        return stored

    def delete_budget(self, budget_id: str, expected_version: int = 0, audit: AuditEntry | None = None) -> Budget:
        self.check()
        k = self.keys
        with self._io("delete budget"):
            verdict, version, raw = self._delete_budget(
                keys=[k.budgets, *k.audit_keys],
                args=[budget_id, expected_version, *codec.audit_args([audit] if audit else [])],
                client=self._r,
            )
        if verdict != "ok":
            raise VersionMismatch(f"budget {budget_id}", expected_version, int(version))
        return codec.decode_budget(raw, f"budget {budget_id} in {k.budgets}")

    def get_budget(self, budget_id: str) -> Budget | None:
        self.check()
        with self._io("budgets"):
            raw = self._r.hget(self.keys.budgets, budget_id)
        return None if raw is None else codec.decode_budget(raw, f"budget {budget_id} in {self.keys.budgets}")

    def list_budgets(self) -> list[Budget]:
        self.check()
        with self._io("budgets"):
            raw = self._r.hgetall(self.keys.budgets)
        return [codec.decode_budget(raw[i], f"budget {i} in {self.keys.budgets}") for i in sorted(raw)]

    def record_alert(self, alert: BudgetAlert) -> BudgetAlert | None:
        self.check()
        k = self.keys
        with self._io("record alert"):
            seq = int(
                self._record_alert(
                    keys=[k.alert_fired, k.alert_seq, k.alerts],
                    args=[k.alert_field(*alert.key), codec.encode_alert(alert)],
                    client=self._r,
                )
            )
        return dataclasses.replace(alert, seq=seq) if seq else None

    def alerts(
        self, after_seq: int, timeout_s: float = 0.0, budget_id: str = "", period: str = ""
    ) -> list[BudgetAlert]:
        self.check()

        def wanted(entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[BudgetAlert]:
            out = []
            for entry_id, fields in entries:
                seq = int(entry_id.split("-", 1)[0])
                a = codec.decode_alert(fields["a"], seq, f"alert {seq} in {self.keys.alerts}")
                if (not budget_id or a.budget_id == budget_id) and (not period or a.period == period):
                    out.append(a)
            return out

        with self._io("alerts"):
            entries = self._r.xrange(self.keys.alerts, f"({max(0, after_seq)}-0", "+")
        found = wanted(entries)
        cursor = int(entries[-1][0].split("-", 1)[0]) if entries else max(0, after_seq)
        deadline = time.monotonic() + timeout_s
        while not found and timeout_s > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._io("watch alerts"):
                reply = self._r.xread(
                    {self.keys.alerts: f"{cursor}-0"}, block=max(1, int(min(left, self._block_s) * 1000))
                )
            for _, batch in reply or ():
                if batch:
                    cursor = int(batch[-1][0].split("-", 1)[0])
                found += wanted(batch)
        return found

    def last_alert_seq(self) -> int:
        self.check()
        with self._io("alerts"):
            return int(self._r.get(self.keys.alert_seq) or 0)

    def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        self.check()
        k = self.keys
        out: list[AuditEntry] = []

        def take(entries: Sequence[tuple[str, Mapping[str, str]]]) -> bool:
            """Keep the matching entries; True once `limit` are found."""
            for entry_id, fields in entries:
                seq = int(entry_id.split("-", 1)[0])
                e = codec.decode_audit(fields["e"], seq, f"audit entry {seq} in {k.audit}")
                if query.matches(e):
                    out.append(e)
                    if len(out) >= query.limit:
                        return True
            return False

        if query.job_id:
            with self._io("audit of a job"):
                raw = self._r.hget(k.audit_jobs, query.job_id) or ""
            seqs = [s for s in (int(x) for x in raw.split(",") if x) if s > query.after_seq]
            for start in range(0, len(seqs), AUDIT_CHUNK):
                with self._io("audit of a job"):
                    pipe = self._r.pipeline(transaction=False)
                    for s in seqs[start : start + AUDIT_CHUNK]:
                        pipe.xrange(k.audit, f"{s}-0", f"{s}-0")
                    rows = pipe.execute()
                if take([e for row in rows for e in row]):
                    break
            return out
        cursor = max(0, query.after_seq)
        while True:
            with self._io("audit"):
                entries = self._r.xrange(k.audit, f"({cursor}-0", "+", count=AUDIT_CHUNK)
            if not entries or take(entries):
                return out
            cursor = int(entries[-1][0].split("-", 1)[0])

    # ================================================================== reads

    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id])[0]

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        found = self._read(job_ids)
        return [found[i][1] if i in found else None for i in job_ids]

    def pending(self, limit: int, offset: int = 0) -> list[Job]:
        self.check()
        if limit <= 0:
            return []
        with self._io("pending"):
            reply = self._pending(keys=[self.keys.queue, self.keys.token], args=[offset, limit], client=self._r)
        return self._pending_jobs(reply)

    def pending_since(self, cursor: int, limit: int) -> tuple[list[Job], int]:
        self.check()
        with self._io("pending"):
            reply = self._pending_since(
                keys=[self.keys.queue, self.keys.token, self.keys.seq],
                args=[cursor, max(0, limit), lua.TIER_SHIFT],
                client=self._r,
            )
        return self._pending_jobs(reply[:-1]), int(reply[-1])

    def _pending_jobs(self, reply: list[str]) -> list[Job]:
        """Jobs of an ids-then-tokens reply, read from Redis only where the cached copy is stale."""
        n = len(reply) // 2
        ids, tokens = reply[:n], reply[n:]
        missing = [i for i, t in zip(ids, tokens, strict=True) if (self._cache.get(i) or ("",))[0] != t]
        fresh = self._read(missing) if missing else {}
        out = []
        for job_id in ids:
            entry = fresh.get(job_id) or self._cache.get(job_id)
            if entry is not None and entry[1].state is JobState.PENDING:
                out.append(entry[1])
        return out

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], str]:
        self.check()
        keys = [self.keys.in_state(s) for s in sorted(query.states)] if query.states else [self.keys.order]
        hi = f"({int(query.page_token)}" if query.page_token else "+inf"
        chunk = max(2 * query.page_size, 256)
        out: list[tuple[float, Job]] = []
        while len(out) < query.page_size:
            with self._io("list jobs"):
                pipe = self._r.pipeline(transaction=False)
                for key in keys:
                    pipe.zrevrangebyscore(key, hi, "-inf", start=0, num=chunk, withscores=True)
                batches: list[list[tuple[str, float]]] = pipe.execute()
            merged = sorted((row for b in batches for row in b), key=lambda r: -r[1])[:chunk]
            if not merged:
                break
            jobs = self.get_many([job_id for job_id, _ in merged])
            for (_, score), job in zip(merged, jobs, strict=True):
                if job is not None and matches(job, query):
                    out.append((score, job))
                    if len(out) == query.page_size:
                        break
            exhausted = all(len(b) < chunk for b in batches) and len(merged) == sum(len(b) for b in batches)
            if exhausted:
                break
            hi = f"({int(merged[-1][1])}"
        full = len(out) == query.page_size
        return [j for _, j in out], (str(int(out[-1][0])) if out and full else "")

    def snapshot(self) -> Snapshot:
        self.check()
        k = self.keys
        with self._mirror_lock:
            mirror, self._mirror = self._mirror, None  # set again only once it is whole
            if mirror is not None:
                with self._io("snapshot"):
                    pipe = self._r.pipeline(transaction=True)
                    pipe.get(k.version)
                    pipe.zrangebyscore(k.alloc_log, f"({mirror.version}", "+inf")
                    pipe.hgetall(k.replicas)
                    raw_version, entries, raw_replicas = pipe.execute()
                version = int(raw_version or 0)
                if self._follow(mirror, version, entries):
                    self._mirror = mirror
                else:
                    mirror = None
            if mirror is None:
                with self._io("snapshot (full)"):
                    pipe = self._r.pipeline(transaction=True)
                    pipe.get(k.version)
                    pipe.hgetall(k.alloc)
                    pipe.hgetall(k.replicas)
                    raw_version, allocs, raw_replicas = pipe.execute()
                mirror = _Mirror(int(raw_version or 0), CapacityState.empty(self.catalog))
                for job_id, raw in allocs.items():
                    self._take(mirror, job_id, *codec.decode_allocation(raw, f"allocation of {job_id} in {k.alloc}"))
                self._mirror = mirror
            replicas: dict[str, dict[str, float]] = {}
            for key, until in raw_replicas.items():
                dataset, _, site = key.rpartition(REPLICA_SEPARATOR)
                replicas.setdefault(dataset, {})[site] = float(until)
            return Snapshot(
                version=mirror.version,
                capacity=mirror.capacity.copy(),
                replicas=replicas,
                allocations=dict(mirror.placements),
            )

    def _follow(self, mirror: _Mirror, version: int, entries: list[str]) -> bool:
        """Bring the mirror to `version` with the log entries after it; False when they do not reach."""
        if version == mirror.version:
            return True
        if version < mirror.version or len(entries) != version - mirror.version:
            return False  # the log was trimmed past us, or the data went back in time (restore, flush)
        for i, entry in enumerate(entries):
            at, _, payload = entry.partition("|")
            if int(at) != mirror.version + i + 1:
                return False
            if not payload:
                continue
            record = codec.load_record(payload, f"allocation log entry {at} in {self.keys.alloc_log}")
            for job_id in record["del"]:
                self._drop(mirror, job_id)
            for job_id, alloc in record["add"].items():
                self._take(mirror, job_id, *codec.allocation_from_dict(alloc, f"allocation log entry {at}"))
        mirror.version = version
        return True

    def _take(self, mirror: _Mirror, job_id: str, placement: Placement, demand: Demand) -> None:
        self._drop(mirror, job_id)
        pool = self._pool(placement)
        if pool is None:
            return
        mirror.capacity.take(pool, demand, placement.bindings)
        mirror.placements[job_id] = placement
        mirror.demands[job_id] = demand

    def _drop(self, mirror: _Mirror, job_id: str) -> None:
        placement = mirror.placements.pop(job_id, None)
        demand = mirror.demands.pop(job_id, None)
        if placement is None or demand is None:
            return
        pool = self._pool(placement)
        if pool is not None:
            mirror.capacity.release(pool, demand, placement.bindings)

    def _pool(self, placement: Placement) -> int | None:
        key = f"{placement.site}/{placement.pool}"
        pool = self.catalog.pool_index.get(key)
        if pool is None and key not in self._warned_pools:
            self._warned_pools.add(key)
            log.warning("allocations at pool %s, which the catalog no longer has: not counted", key)
        return pool

    def events(self, after_seq: int, job_id: str = "", timeout_s: float = 0.0) -> list[JobEvent]:
        self.check()
        deadline = time.monotonic() + timeout_s
        found, cursor = self._events_since(after_seq, job_id)
        while not found and timeout_s > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._io("watch events"):
                reply = self._r.xread(
                    {self.keys.events: f"{cursor}-0"}, block=max(1, int(min(left, self._block_s) * 1000))
                )
            for _, entries in reply or ():
                if entries:
                    cursor = int(entries[-1][0].split("-", 1)[0])
                found += self._events_of([(i, f) for i, f in entries if not job_id or f["id"] == job_id])
        return found

    def _events_since(self, after_seq: int, job_id: str) -> tuple[list[JobEvent], int]:
        """Events after `after_seq` now, and the seq to wait after when there are none."""
        if not job_id:
            with self._io("events"):
                entries = self._r.xrange(self.keys.events, f"({after_seq}-0", "+")
            return self._events_of(entries), after_seq
        with self._io("job events"):
            pipe = self._r.pipeline(transaction=True)
            pipe.get(self.keys.seq)
            pipe.hget(self.keys.job_events, job_id)
            last, seqs = pipe.execute()
        wanted = [s for s in (int(x) for x in (seqs or "").split(",") if x) if s > after_seq]
        if not wanted:
            return [], max(after_seq, int(last or 0))
        with self._io("job events"):
            pipe = self._r.pipeline(transaction=False)
            for s in wanted:
                pipe.xrange(self.keys.events, f"{s}-0", f"{s}-0")
            rows = pipe.execute()
        return self._events_of([e for row in rows for e in row]), max(after_seq, int(last or 0))

    def _events_of(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[JobEvent]:
        self._specs_for([fields["id"] for _, fields in entries])
        out = []
        for entry_id, fields in entries:
            seq = int(entry_id.split("-", 1)[0])
            job_id = fields["id"]
            job = codec.decode_status(fields["j"], self._spec(job_id, None), f"event {seq} in {self.keys.events}")
            out.append(JobEvent(seq, EventKind(fields["k"]), job, float(fields["at"])))
        return out

    def last_seq(self) -> int:
        self.check()
        with self._io("last seq"):
            return int(self._r.get(self.keys.seq) or 0)

    def counts(self) -> Mapping[JobState, int]:
        self.check()
        with self._io("counts"):
            raw = self._r.hgetall(self.keys.counts)
        return {s: int(raw.get(s.value, 0)) for s in JobState}

    def close(self) -> None:
        self._r.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"
