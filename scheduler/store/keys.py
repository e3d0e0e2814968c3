"""Every Redis key Gravity uses, built here and nowhere else (after arq).

All keys share one prefix (setting `store.key_prefix`, default "gravity"), wrapped in a Redis
Cluster hash tag - `{gravity}:jobs` - so every key lands in one hash slot (one cluster node),
where the multi-key Lua scripts need them. Two deployments sharing one Redis database use two
prefixes.

    {p}:schema          string  store schema version (scheduler.store.codec.SCHEMA_VERSION)
    {p}:specs           hash    job id -> job spec (JSON), written once at submission
    {p}:jobs            hash    job id -> job status: everything but the spec (JSON), per transition
    {p}:token           hash    job id -> "rev:state:attempts:tag", the compare-and-set token of a job
    {p}:requests        hash    client request_id -> job id (idempotent submit)
    {p}:submitted       string  submission counter (list order, page tokens)
    {p}:order           zset    job id by submission number (all jobs, newest = highest)
    {p}:in:<state>      zset    job id by submission number, one per state (ListJobs filters)
    {p}:queue           zset    pending job id by (priority tier, queue sequence)
    {p}:counts          hash    state -> number of jobs
    {p}:version         string  plan version (bumped by placements, rejections, state changes)
    {p}:alloc           hash    job id -> allocation (placement + demand) of each placed or running job
    {p}:alloc_log       zset    version -> allocation changes at that version (incremental snapshots)
    {p}:replicas        hash    "<dataset>|<site>" -> cached copy expires at (Unix seconds)
    {p}:seq             string  event sequence
    {p}:events          stream  job events, entry id "<seq>-0": kind, at, job id, job status
    {p}:job_events      hash    job id -> comma-separated event seqs of that job
    {p}:leader          string  "<epoch> <holder>" with a TTL: the leader lease
    {p}:epoch           string  last epoch handed out (fencing tokens only grow)
    {p}:launches        hash    "<job id>#<attempt>" -> epoch that claimed the launch
    {p}:launch_log      list    "<job id>#<attempt> <epoch> <unix s>", every granted claim, oldest first
    {p}:budgets         hash    budget id ("<tag>=<value>") -> budget (JSON, with its compare-and-set version)
    {p}:alerts          stream  budget alerts, entry id "<seq>-0": the alert (JSON)
    {p}:alert_seq       string  alert sequence
    {p}:alert_fired     hash    "<budget id>|<period>|<threshold>" -> seq of the alert (each fires once)
    {p}:audit           stream  decision audit trail, entry id "<seq>-0": the entry (JSON); never trimmed
    {p}:audit_seq       string  audit sequence
    {p}:audit_jobs      hash    job id -> comma-separated audit seqs of that job
"""

from __future__ import annotations

from dataclasses import dataclass

from placers.domain import JobState

DEFAULT_PREFIX = "gravity"
REPLICA_SEPARATOR = "|"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "{} \t\n"):
            raise ValueError(f"store key prefix {self.prefix!r}: must be non-empty, without braces or spaces")

    def _k(self, name: str) -> str:
        return f"{{{self.prefix}}}:{name}"

    @property
    def schema(self) -> str:
        return self._k("schema")

    @property
    def specs(self) -> str:
        return self._k("specs")

    @property
    def jobs(self) -> str:
        return self._k("jobs")

    @property
    def token(self) -> str:
        return self._k("token")

    @property
    def requests(self) -> str:
        return self._k("requests")

    @property
    def submitted(self) -> str:
        return self._k("submitted")

    @property
    def order(self) -> str:
        return self._k("order")

    def in_state(self, state: JobState) -> str:
        return self._k(f"in:{state.value}")

    @property
    def state_prefix(self) -> str:
        """What in_state(s) is minus the state's name (the Lua scripts append it)."""
        return self._k("in:")

    @property
    def queue(self) -> str:
        return self._k("queue")

    @property
    def counts(self) -> str:
        return self._k("counts")

    @property
    def version(self) -> str:
        return self._k("version")

    @property
    def alloc(self) -> str:
        return self._k("alloc")

    @property
    def alloc_log(self) -> str:
        return self._k("alloc_log")

    @property
    def replicas(self) -> str:
        return self._k("replicas")

    @property
    def seq(self) -> str:
        return self._k("seq")

    @property
    def events(self) -> str:
        return self._k("events")

    @property
    def job_events(self) -> str:
        return self._k("job_events")

    @property
    def leader(self) -> str:
        return self._k("leader")

    @property
    def epoch(self) -> str:
        return self._k("epoch")

    @property
    def launches(self) -> str:
        return self._k("launches")

    @property
    def launch_log(self) -> str:
        return self._k("launch_log")

    @property
    def budgets(self) -> str:
        return self._k("budgets")

    @property
    def alerts(self) -> str:
        return self._k("alerts")

    @property
    def alert_seq(self) -> str:
        return self._k("alert_seq")

    @property
    def alert_fired(self) -> str:
        return self._k("alert_fired")

    @property
    def audit(self) -> str:
        return self._k("audit")

    @property
    def audit_seq(self) -> str:
        return self._k("audit_seq")

    @property
    def audit_jobs(self) -> str:
        return self._k("audit_jobs")

    @property
    def audit_keys(self) -> list[str]:
        """The keys a script that appends audit entries needs, in the order of redis_scripts._AUDIT."""
        return [self.audit, self.audit_seq, self.audit_jobs]

    @staticmethod
    def alert_field(budget_id: str, period: str, threshold: float) -> str:
        return f"{budget_id}|{period}|{threshold!r}"

    @staticmethod
    def replica_field(dataset: str, site: str) -> str:
        return f"{dataset}{REPLICA_SEPARATOR}{site}"

    @staticmethod
    def launch_field(job_id: str, attempt: int) -> str:
        return f"{job_id}#{attempt}"

    def all(self) -> list[str]:
        """Every fixed key (the per-state sets included), e.g. for deleting one deployment's data."""
        fixed = [
            self.schema, self.specs, self.jobs, self.token, self.requests, self.submitted, self.order, self.queue,
            self.counts, self.version, self.alloc, self.alloc_log, self.replicas, self.seq, self.events,
            self.job_events, self.leader, self.epoch, self.launches, self.launch_log,
            self.budgets, self.alerts, self.alert_seq, self.alert_fired, self.audit, self.audit_seq, self.audit_jobs,
        ]  # fmt: skip
        return fixed + [self.in_state(s) for s in JobState]
