"""All of Gravity's settings: one pydantic-settings root, built once in main and passed down.

Sources, later wins: defaults < environment (GRAVITY_*, nested with __, e.g.
GRAVITY_CYCLE__TICK_S=0.1) < a YAML file (`--config`) < command-line flags.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CycleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tick_s: float = Field(default=0.05, gt=0, description="pause between scheduling cycles")
    max_batch: int = Field(default=20_000, ge=1, description="pending jobs decided per cycle at most")
    retry_waiting_s: float = Field(
        default=5.0, gt=0, description="waiting jobs are retried when capacity frees, and at least this often"
    )
    sweep_batch: int = Field(
        default=2_000, ge=1, description="waiting jobs re-decided per cycle by the periodic sweep of the backlog"
    )
    replica_ttl_s: float = Field(default=7 * 86400.0, gt=0, description="how long a copied dataset is kept")
    service_horizon_s: float = Field(
        default=30 * 86400.0, gt=0, description="horizon over which a long-running service is costed"
    )
    # Wait or burst (placers/waiting.py documents each policy).
    wait_policy: Literal["no-wait", "constant", "runtime", "compute", "deadline"] = Field(
        default="deadline",
        description="when a job may stay pending for cheaper capacity instead of taking a dearer option now",
    )
    wait_fallback: Literal["no-wait", "constant", "runtime", "compute"] = Field(
        default="no-wait", description="the policy for jobs without a deadline under wait_policy=deadline"
    )
    wait_constant_s: float = Field(default=3600.0, ge=0, description="constant: wait up to this long")
    wait_factor: float = Field(default=1.0, ge=0, description="runtime: k x runtime; compute: k x GPUs x runtime")
    wait_margin_s: float = Field(default=300.0, ge=0, description="safety margin kept before a deadline")
    wait_min_saving_usd: float = Field(default=0.0, ge=0, description="wait only to save more than this")


class ExecutorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["ray", "sim"] = Field(
        default="ray", description="ray: run entrypoints on Ray; sim: virtual execution (benchmarks, dry runs)"
    )
    ray_address: str | None = Field(
        default=None, description="Ray dashboard address for every site; None starts an embedded local Ray"
    )
    site_addresses: dict[str, str] = Field(default_factory=dict, description="per-site Ray addresses")
    local_gpus: int = Field(default=0, ge=0, description="logical GPUs of the embedded Ray (0: catalog total)")
    ray_auth_token: SecretStr | None = Field(
        default=None,
        description="bearer token for remote Ray clusters with token authentication (RAY_AUTH_MODE=token)",
    )
    launcher_python: str = Field(
        default="python", description="the Python that runs Gravity's launcher on remote Ray clusters"
    )
    require_site_resources: bool = Field(
        default=True,
        description="a site whose Ray cluster advertises no site:<name> (or pool:<name>/...) resource is "
        "unavailable; turn off for autoscaling clusters that scale a site's nodes to zero",
    )
    gang_ready_timeout_s: float = Field(
        default=300.0, gt=0, description="how long a launch waits for its placement group before the attempt fails"
    )
    submit_give_up_s: float = Field(
        default=60.0, gt=0, description="a launch its Ray cluster has not taken after this long fails (and is retried)"
    )
    health_poll_s: float = Field(default=5.0, gt=0, description="how often a running service's health is read")
    restart_backoff_s: float = Field(default=1.0, gt=0, description="first delay before a failed replica restarts")
    restart_backoff_max_s: float = Field(default=30.0, gt=0, description="longest delay between replica restarts")
    poll_s: float = Field(default=0.5, gt=0)
    log_tail_lines: int = Field(default=40, ge=1)
    sim_speedup: float = Field(default=1.0, gt=0, description="sim executor: runtime divided by this")


class TagRule(BaseModel):
    """What a job's tag must look like. With `allowed` and/or `pattern` set, a value passes if it is one of
    `allowed` or fully matches `pattern` (a Python regular expression)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = Field(default=True, description="a job without this tag is refused")
    allowed: list[str] = Field(default_factory=list, description="the values allowed")
    pattern: str = Field(default="", description="regex a value must match in full")
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        if v:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    def check(self, value: str) -> str | None:
        """None when `value` is allowed, else what is wrong with it."""
        if not self.allowed and not self.pattern:
            return None if value.strip() else "must not be empty"
        if value in self.allowed or (self.pattern and re.fullmatch(self.pattern, value)):
            return None
        want = []
        if self.allowed:
            want.append(f"one of {', '.join(self.allowed)}")
        if self.pattern:
            want.append(f"matching /{self.pattern}/")
        return f"value {value!r} is not allowed (expected {' or '.join(want)})"


class BudgetConfig(BaseModel):
    """A budget created at start-up when the store has none for its scope (the API may change it later)."""

    model_config = ConfigDict(extra="forbid")

    tag: str = Field(default="cost_center", min_length=1)
    value: str = Field(min_length=1)
    amount_usd: float = Field(ge=0, description="USD per calendar month")
    on_breach: Literal["reject", "hold", "alert"] = "hold"
    thresholds: list[float] | None = Field(default=None, description="fractions; default finops.default_thresholds")


class FinOpsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: dict[str, TagRule] = Field(
        default_factory=dict, description="tag taxonomy: tag key -> rule, checked at admission (empty: any tags)"
    )
    budgets: list[BudgetConfig] = Field(default_factory=list, description="budgets seeded into the store")
    default_thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0], min_length=1)
    alert_webhook_url: str = Field(default="", description="POST each budget alert as JSON here ('' = off)")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_retries: int = Field(default=3, ge=0)
    idle_share: float = Field(default=0.10, ge=0, le=1, description="report: flag idle reservations above this")
    underused_share: float = Field(default=0.30, ge=0, le=1, description="report: flag fixed pools used less")
    alert_check_s: float = Field(default=1.0, gt=0, description="budgets are checked for alerts this often at most")

    @field_validator("tags")
    @classmethod
    def _tag_keys(cls, v: dict[str, TagRule]) -> dict[str, TagRule]:
        for key in v:
            if not key or "=" in key or "," in key:
                raise ValueError(f"tag key {key!r}: must be non-empty without '=' or ','")
        return v

    @field_validator("default_thresholds")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < t <= 10 for t in v):
            raise ValueError("thresholds are fractions of the budget in (0, 10]")
        return v

    @model_validator(mode="after")
    def _unique_budgets(self) -> FinOpsSettings:
        seen: set[tuple[str, str]] = set()
        for b in self.budgets:
            if (b.tag, b.value) in seen:
                raise ValueError(f"budgets: {b.tag}={b.value} is listed twice")
            seen.add((b.tag, b.value))
        return self


class StoreSettings(BaseModel):
    """Where state lives beyond `store_url`: Redis key layout, leader lease, timeouts."""

    model_config = ConfigDict(extra="forbid")

    key_prefix: str = Field(
        default="gravity",
        pattern=r"^[^{}\s]+$",
        description="prefix of every Redis key; deployments sharing one Redis database need distinct prefixes",
    )
    lease_ttl_s: float = Field(
        default=5.0,
        gt=0,
        description="leader lease: a stopped or partitioned leader is replaced within this plus one cycle",
    )
    event_history: int = Field(default=200_000, ge=1000, description="job events kept for WatchJobs")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Redis connect timeout")
    command_timeout_s: float = Field(
        default=5.0, gt=0, description="Redis reply timeout; past it the call fails UNAVAILABLE"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRAVITY_", env_nested_delimiter="__", extra="forbid")

    listen: str = Field(default="127.0.0.1:50051", description="gRPC host:port")
    catalog: str = Field(default="default", description="site catalog YAML, or 'default'")
    placer: str = Field(default="greedy", description="placement policy (placers.registry)")
    store_url: str = Field(default="memory://", description="memory:// or redis://host:port/db")
    store: StoreSettings = Field(default_factory=StoreSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    cycle: CycleSettings = Field(default_factory=CycleSettings)
    budgets_usd: dict[str, float] = Field(
        default_factory=dict,
        description="shorthand for finops.budgets: USD per month per value of budget_tag, held on breach",
    )
    budget_tag: str = "cost_center"
    finops: FinOpsSettings = Field(default_factory=FinOpsSettings)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    gc_freeze_s: float = Field(
        default=1.0,
        ge=0,
        description="gravity serve: every this often, move surviving objects out of the cyclic garbage "
        "collector's full passes (gc.freeze), which otherwise pause the process ~150 ms per 100k jobs "
        "held; cyclic garbage that survives that long is then not reclaimed (0 = off)",
    )
    metrics_host: str = Field(default="127.0.0.1", description="address the metrics endpoint listens on")
    log_level: str = "INFO"


class SettingsError(ValueError):
    pass


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Settings from an optional YAML file, the environment and explicit overrides (flags)."""
    data: dict[str, Any] = {}
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"{config_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{config_file}: expected a mapping of settings")
        data.update(loaded)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        # Init kwargs outrank the environment in pydantic-settings: file and flags win over GRAVITY_*.
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SettingsError(f"{config_file or 'settings'}: {where}: {first['msg']}") from None
