"""All of Gravity's settings: one pydantic-settings root, built once in main and passed down.

Sources, later wins: defaults < environment (GRAVITY_*, nested with __, e.g.
GRAVITY_CYCLE__TICK_S=0.1) < a YAML file (`--config`) < command-line flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class CycleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tick_s: float = Field(default=0.05, gt=0, description="pause between scheduling cycles")
    max_batch: int = Field(default=20_000, ge=1, description="pending jobs decided per cycle at most")
    retry_waiting_s: float = Field(
        default=5.0, gt=0, description="waiting jobs are retried when capacity frees, and at least this often"
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
    poll_s: float = Field(default=0.5, gt=0)
    log_tail_lines: int = Field(default=40, ge=1)
    sim_speedup: float = Field(default=1.0, gt=0, description="sim executor: runtime divided by this")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRAVITY_", env_nested_delimiter="__", extra="forbid")

    listen: str = Field(default="127.0.0.1:50051", description="gRPC host:port")
    catalog: str = Field(default="default", description="site catalog YAML, or 'default'")
    placer: str = Field(default="greedy", description="placement policy (placers.registry)")
    store_url: str = Field(default="memory://", description="memory:// or redis://host:port/db")
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    cycle: CycleSettings = Field(default_factory=CycleSettings)
    budgets_usd: dict[str, float] = Field(
        default_factory=dict, description="remaining budget per cost center for the current period"
    )
    budget_tag: str = "cost_center"
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
