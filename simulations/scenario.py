"""Scenarios: one YAML file says what to replay, on which sites, under which policy, with which what-ifs.

    name: philly-hybrid
    seed: 7
    trace:      which trace file(s), how to read them, the GPU its durations were measured on
    catalog:    the base catalog whose cloud sites to keep, GPU models to add, on-prem sites built
                from the trace's node list, extra sites and links in catalog-file form
    what_if:    knobs applied to the catalog: add_gpus, scale_price, egress, link, forbid, residency
    workload:   seeded generators for what no trace records (datasets with home sites and sizes,
                residency classes, deadlines, tags, spot tolerance, runtime-estimate error)
    scheduler:  the production settings (scheduler.settings.Settings: placer, cycle, budgets, ...)
    simulation: the scheduling interval, metric sampling, when to stop
    report:     where outputs go, which tags to show back

Every section is validated with pydantic; an error names the file and the field
(`philly_hybrid.yaml: what_if[1].scale_price.factor: Input should be greater than 0`).
Paths may use ${VAR} or ${VAR:-default}; relative paths are relative to the scenario file.
`overrides` (dotted paths, as `gravity compare --set scheduler.placer=joint` gives them) are
applied to the document before validation, so they are validated like the file itself.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from placers.catalog import FileFieldError
from placers.registry import PLACERS
from scheduler.settings import Settings

DEFAULT_TRACES = "../../../shared/traces"  # from simulations/scenarios/ to the shared trace folder


class ScenarioError(FileFieldError):
    """A scenario that cannot be run; names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------- trace


class TraceSection(_Model):
    kind: Literal["philly", "openb", "generic"]
    jobs: str = Field(min_length=1, description="jobs (Philly), pods (openb) or generic job CSV")
    nodes: str | None = Field(default=None, description="Philly VC nodes or openb node list")
    gpu_model: str = Field(min_length=1, description="the catalog GPU model the trace durations were measured on")
    on_error: Literal["raise", "skip"] = "raise"
    duplicates: Literal["drop", "keep"] = "drop"
    timezone: str = "UTC"
    limit: int | None = Field(default=None, ge=1, description="replay only the first N jobs by submit time")
    skip: int = Field(default=0, ge=0, description="leave out the first N jobs by submit time")
    load_scale: float = Field(default=1.0, gt=0, description="> 1 compresses inter-arrival times (more load)")
    epoch: str = Field(default="2023-06-01T00:00:00Z", description="openb: what trace time 0 is")


# --------------------------------------------------------------------------------------- catalog


class GpuModelEntry(_Model):
    speed: float = Field(gt=0)
    memory_gb: float = Field(gt=0)
    source: str = ""


class OnPremSection(_Model):
    """An on-prem site built from the trace's node list."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    pools_by: Literal["shape", "group"] = Field(
        default="shape", description="one pool per node shape (model, GPUs, CPU, memory), or per trace group (VC)"
    )
    site_per_group: bool = Field(
        default=False, description="Philly: one site per virtual cluster; jobs may use only their own VC's site"
    )
    gpus_per_node: int = Field(default=8, ge=1, le=64, description="Philly: GPUs per node (the file does not say)")
    node_scale: float = Field(default=1.0, gt=0, description="scale every pool's node count (at least 1 node)")
    cpus_per_node: float = Field(default=0, ge=0, description="Philly: CPUs per node (0 = unbounded)")
    memory_gb_per_node: float = Field(default=0, ge=0)
    usd_per_gpu_hour: float | dict[str, float] = Field(description="amortised price, one figure or per GPU model")
    jurisdiction: str = "US"
    region: str = "us-east"
    provider: str = "onprem"
    uplink_gbps: float = Field(default=10.0, gt=0)
    storage_usd_per_gb_month: float = Field(default=0.01, ge=0)
    egress_usd_per_gb: float = Field(default=0.0, ge=0)
    rtt_ms: dict[str, float] | None = Field(default=None, description="default: copied from a base site in `region`")
    source: str = ""


class CatalogSection(_Model):
    base: str = Field(default="default", description="catalog file whose sites, models and tariffs are reused")
    base_sites: Literal["cloud", "all", "none"] | list[str] = Field(
        default="cloud", description="which base sites to keep: cloud ones, all, none, or a list of names/patterns"
    )
    gpu_models: dict[str, GpuModelEntry] = Field(default_factory=dict)
    onprem: list[OnPremSection] = Field(default_factory=list)
    sites: list[dict[str, Any]] = Field(default_factory=list, description="extra sites, in catalog-file form")
    links: list[dict[str, Any]] = Field(default_factory=list, description="extra links, in catalog-file form")


# --------------------------------------------------------------------------------------- what-if


class AddGpus(_Model):
    site: str = Field(min_length=1)
    gpu_model: str = Field(min_length=1)
    gpus: int = Field(ge=1)
    pool: str | None = Field(default=None, description="default: the site's first pool of that model, else a new one")
    gpus_per_node: int | None = Field(default=None, ge=1, le=64, description="for a new pool")
    usd_per_gpu_hour: float | None = Field(default=None, gt=0, description="for a new pool")


class ScalePrice(_Model):
    factor: float = Field(gt=0)
    sites: str = Field(default="*", description="site name pattern (fnmatch)")
    gpu_model: str = "*"
    spot: bool = Field(default=True, description="scale spot prices too")


class Egress(_Model):
    sites: str = Field(default="*", description="site name pattern whose outbound tariff changes")
    internet_usd_per_gb: float | None = Field(default=None, ge=0)
    same_provider_usd_per_gb: float | None = Field(default=None, ge=0)
    same_provider_intercontinental_usd_per_gb: float | None = Field(default=None, ge=0)


class Forbid(_Model):
    sites: str | None = Field(default=None, description="site name pattern")
    region: str | None = None
    jurisdiction: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Forbid:
        if [self.sites, self.region, self.jurisdiction].count(None) != 2:
            raise ValueError("give exactly one of sites, region, jurisdiction")
        return self


class Residency(_Model):
    classification: str = Field(min_length=1)
    jurisdictions: list[str] = Field(min_length=1)


class WhatIf(_Model):
    """Exactly one knob per entry."""

    add_gpus: AddGpus | None = None
    scale_price: ScalePrice | None = None
    egress: Egress | None = None
    link: dict[str, Any] | None = Field(default=None, description="a link in catalog-file form (from, to, ...)")
    forbid: Forbid | None = None
    residency: Residency | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WhatIf:
        set_ = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"each what_if entry sets exactly one knob of {', '.join(type(self).model_fields)}")
        return self

    @property
    def knob(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)


# --------------------------------------------------------------------------------------- workload


class SizeDistribution(_Model):
    """Log-normal dataset sizes: median and sigma of ln(size), clipped to [min_gb, max_gb]."""

    median_gb: float = Field(gt=0)
    sigma: float = Field(default=1.0, ge=0)
    min_gb: float = Field(default=1.0, gt=0)
    max_gb: float = Field(default=50_000.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> SizeDistribution:
        if self.min_gb > self.max_gb:
            raise ValueError("min_gb must not exceed max_gb")
        return self


class DatasetGroup(_Model):
    count: int = Field(ge=1)
    prefix: str = Field(default="ds", pattern=r"^[a-z0-9][a-z0-9-]*$")
    classification: str = "public"
    size: SizeDistribution
    home_sites: dict[str, float] = Field(min_length=1, description="site -> weight of being the dataset's home")


class DataSection(_Model):
    groups: list[DatasetGroup] = Field(min_length=1)
    jobs_with_data: float = Field(default=0.8, ge=0, le=1)
    zipf_s: float = Field(default=1.0, ge=0, description="dataset popularity ~ rank^-s (0 = uniform)")


class DeadlineSection(_Model):
    """deadline = submit + slack x the job's trace duration, slack uniform in [slack_min, slack_max]."""

    fraction: float = Field(ge=0, le=1)
    slack_min: float = Field(default=1.5, ge=1.0)
    slack_max: float = Field(default=4.0, ge=1.0)

    @model_validator(mode="after")
    def _order(self) -> DeadlineSection:
        if self.slack_min > self.slack_max:
            raise ValueError("slack_min must not exceed slack_max")
        return self


class TagRule(_Model):
    """A tag: the job's trace group (`from_group`), or drawn from `values` by weight
    (once per trace group when `per_group`)."""

    values: dict[str, float] | None = None
    from_group: bool = False
    per_group: bool = False

    @model_validator(mode="after")
    def _one(self) -> TagRule:
        if (self.values is None) == (not self.from_group):
            raise ValueError("give either values or from_group: true")
        if self.values is not None and (not self.values or any(w < 0 for w in self.values.values())):
            raise ValueError("values needs at least one value with a weight >= 0")
        return self


class WorkloadSection(_Model):
    data: DataSection | None = None
    deadlines: DeadlineSection | None = None
    tags: dict[str, TagRule] = Field(default_factory=dict)
    spot_fraction: float = Field(default=0.0, ge=0, le=1, description="share of jobs that accept spot capacity")
    runtime_estimate_sigma: float = Field(
        default=0.0, ge=0, description="log-normal error of the runtime the scheduler is told (0 = exact)"
    )
    same_gpu_model: bool = Field(default=False, description="jobs may only use the trace's GPU model")
    gang: Literal["auto", "always", "never"] = Field(
        default="auto", description="GPUs on one node: when they fit one (auto), always, or never"
    )
    kind: Literal["training", "batch"] = "training"


# --------------------------------------------------------------------------------------- run


class SimulationSection(_Model):
    interval_s: float = Field(default=60.0, ge=0, description="scheduling interval; 0 = a cycle at every event")
    sample_s: float = Field(default=3600.0, gt=0, description="how often fragmentation is sampled")
    max_stall_s: float = Field(
        default=30 * 86400.0, gt=0, description="stop when nothing runs or arrives and no job was placed for this long"
    )
    end_at_s: float | None = Field(default=None, gt=0, description="stop this long after the first arrival")
    progress: bool | None = Field(default=None, description="progress bar; default: when stderr is a terminal")


class ReportSection(_Model):
    output_dir: str | None = Field(default=None, description="default: out/sim/<name>")
    plots: bool = True
    tags: list[str] = Field(default_factory=lambda: ["cost_center", "project"])
    jobs_csv: bool = True


class ScenarioFile(_Model):
    version: Literal[1] = 1
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seed: int = 0
    trace: TraceSection
    catalog: CatalogSection = Field(default_factory=CatalogSection)
    what_if: list[WhatIf] = Field(default_factory=list)
    workload: WorkloadSection = Field(default_factory=WorkloadSection)
    scheduler: dict[str, Any] = Field(default_factory=dict, description="scheduler.settings.Settings fields")
    simulation: SimulationSection = Field(default_factory=SimulationSection)
    report: ReportSection = Field(default_factory=ReportSection)


class SimSchedulerSettings(Settings):
    """The production settings, read from the scenario only (never from GRAVITY_* variables),
    so a replay does not change with the shell it runs in."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


#: Settings the simulator decides itself; a scenario setting them is an error, not silently ignored.
NOT_IN_SCENARIO = {
    "catalog": "build the catalog in the scenario's catalog section",
    "store_url": "the simulator uses the in-memory store",
    "executor": "the simulator uses the virtual executor",
    "listen": "the simulator serves no gRPC",
}


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, with where it came from (relative paths resolve against `base_dir`)."""

    spec: ScenarioFile
    settings: Settings
    source: str
    base_dir: Path
    document: Mapping[str, Any]  # the raw document after overrides (for sweeps and reports)

    @property
    def name(self) -> str:
        return self.spec.name

    def path(self, value: str, field_path: str) -> Path:
        """A path field with ${VAR} / ${VAR:-default} expanded, relative to the scenario file."""
        expanded = expand_vars(value, self.source, field_path)
        p = Path(expanded)
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def output_dir(self) -> Path:
        if self.spec.report.output_dir:
            return self.path(self.spec.report.output_dir, "report.output_dir")
        return Path("out") / "sim" / self.spec.name

    def fail(self, field_path: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, field_path, message)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(value: str, source: str, field_path: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name == "GRAVITY_TRACES" and default is None:
            default = DEFAULT_TRACES
        got = os.environ.get(name, default)
        if got is None:
            raise ScenarioError(source, field_path, f"environment variable {name} is not set")
        return got

    return _VAR.sub(sub, value)


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def parse_override(text: str) -> tuple[str, Any]:
    """'scheduler.placer=joint' -> ('scheduler.placer', 'joint'); the value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected dotted.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ValueError(f"override {text!r}: empty path")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(doc: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for path, value in overrides.items():
        node: Any = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return out


def parse_scenario(
    raw: Any, source: str = "<memory>", base_dir: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(source, "<root>", "expected a mapping at the top level")
    doc = apply_overrides(raw, overrides or {})
    try:
        spec = ScenarioFile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ScenarioError(source, format_loc(first["loc"]), first["msg"]) from None
    for key, why in NOT_IN_SCENARIO.items():
        if key in spec.scheduler:
            raise ScenarioError(source, f"scheduler.{key}", f"not a scenario setting: {why}")
    try:
        settings = SimSchedulerSettings(**spec.scheduler)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ScenarioError(source, "scheduler." + format_loc(first["loc"]), first["msg"]) from None
    if settings.placer not in PLACERS:
        known = ", ".join(sorted(PLACERS))
        raise ScenarioError(source, "scheduler.placer", f"unknown placer {settings.placer!r} (known: {known})")
    return Scenario(spec, settings, source, (base_dir or Path.cwd()).resolve(), doc)


def read_scenario_document(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(p), "<file>", f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(str(p), "<yaml>", " ".join(str(exc).split())) from None
    if not isinstance(raw, dict):
        raise ScenarioError(str(p), "<root>", "expected a mapping at the top level")
    return raw


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    p = Path(path)
    return parse_scenario(read_scenario_document(p), str(p), p.parent, overrides)
