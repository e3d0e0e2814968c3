"""The site catalog: where jobs can run, what it costs, how far apart the sites are.

Prices and topology are data (YAML), never code. `load_catalog(path)` validates a file and
returns an immutable `Catalog` with the derived pairwise matrices (egress USD/GB, bandwidth
Gbps) built once. A malformed file raises `CatalogError` naming the file and the field.
"""

from __future__ import annotations

import enum
import importlib.resources
import importlib.resources.abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from placers.domain import PUBLIC, Dataset

HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0

DEFAULT_CATALOG = "default"


class FileFieldError(ValueError):
    """A file that cannot be used, naming it and the field: 'mine.yaml: sites[2].gpu_model: ...'."""

    def __init__(self, source: str, field_path: str, message: str) -> None:
        super().__init__(f"{source}: {field_path}: {message}")
        self.source = source
        self.field = field_path
        self.message = message


class CatalogError(FileFieldError):
    """A catalog file that cannot be used; `field` is a dotted path such as sites[2].pools[0].gpu_model."""


class SiteKind(enum.StrEnum):
    ONPREM = "onprem"
    CLOUD = "cloud"


# --------------------------------------------------------------------------------------
# File schema (pydantic): mirrors the YAML, validated field by field.
# --------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuModelFile(_Model):
    speed: float = Field(gt=0, description="throughput relative to the reference GPU")
    memory_gb: float = Field(gt=0)
    source: str = ""


class PoolFile(_Model):
    name: str = Field(min_length=1)
    gpu_model: str
    gpus_per_node: int = Field(ge=1, le=64)
    nodes: int | None = Field(default=None, ge=1, description="on-prem only: node count")
    max_gpus: int | None = Field(default=None, ge=1, description="cloud only: quota for this shape")
    cpus_per_node: float = Field(default=0, ge=0)
    memory_gb_per_node: float = Field(default=0, ge=0)
    usd_per_gpu_hour: float = Field(gt=0)
    spot_usd_per_gpu_hour: float | None = Field(default=None, gt=0)
    dedicated: bool = Field(default=False, description="reserved for inference services")
    source: str = ""


class EgressFile(_Model):
    internet_usd_per_gb: float = Field(ge=0)
    same_provider_usd_per_gb: float | None = Field(default=None, ge=0)
    same_provider_intercontinental_usd_per_gb: float | None = Field(default=None, ge=0)
    source: str = ""


class SiteFile(_Model):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: SiteKind
    provider: str = Field(min_length=1)
    jurisdiction: str = Field(min_length=1)
    region: str = Field(min_length=1, description="the user region the site sits in")
    pools: list[PoolFile] = Field(min_length=1)
    burst_quota_gpus: int | None = Field(default=None, ge=0)
    egress: EgressFile
    uplink_gbps: float = Field(gt=0)
    storage_usd_per_gb_month: float = Field(ge=0)
    rtt_ms: dict[str, float]
    ray_address: str | None = None
    source: str = ""


class LinkFile(_Model):
    from_site: str = Field(alias="from")
    to_site: str = Field(alias="to")
    egress_usd_per_gb: float | None = Field(default=None, ge=0)
    bandwidth_gbps: float | None = Field(default=None, gt=0)
    symmetric: bool = True
    source: str = ""


class DatasetFile(_Model):
    id: str = Field(min_length=1)
    size_gb: float = Field(gt=0)
    replica_sites: list[str] = Field(min_length=1)
    classification: str = PUBLIC


class CatalogFile(_Model):
    version: Literal[1]
    reference_gpu: str
    gpu_models: dict[str, GpuModelFile] = Field(min_length=1)
    user_regions: list[str] = Field(min_length=1)
    residency: dict[str, list[str]] = Field(default_factory=dict)
    sites: list[SiteFile] = Field(min_length=1)
    links: list[LinkFile] = Field(default_factory=list)
    datasets: list[DatasetFile] = Field(default_factory=list)
    sources: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Runtime catalog: immutable, indexed, with pairwise matrices.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str
    speed: float
    memory_gb: float


@dataclass(frozen=True, slots=True)
class Pool:
    """A homogeneous group of GPU nodes at a site.

    On-prem pools are node-bound (`elastic` False): `nodes` fixed nodes that fragment.
    Cloud pools are elastic: each job gets its own instance of `gpus_per_node` GPUs at most,
    bounded only by the GPU quota `max_gpus`.
    """

    site: str
    name: str
    gpu_model: str
    gpus_per_node: int
    nodes: int
    max_gpus: int
    cpus_per_node: float
    memory_gb_per_node: float
    usd_per_gpu_hour: float
    spot_usd_per_gpu_hour: float | None
    dedicated: bool
    elastic: bool

    @property
    def key(self) -> str:
        return f"{self.site}/{self.name}"


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    kind: SiteKind
    provider: str
    jurisdiction: str
    region: str
    pools: tuple[Pool, ...]
    burst_quota_gpus: int | None
    storage_usd_per_gb_month: float
    rtt_ms: Mapping[str, float]
    ray_address: str | None

    @property
    def onprem(self) -> bool:
        return self.kind is SiteKind.ONPREM


@dataclass(frozen=True)
class Catalog:
    reference_gpu: str
    gpu_models: Mapping[str, GpuModel]
    user_regions: tuple[str, ...]
    residency: Mapping[str, tuple[str, ...]]  # classification -> jurisdictions allowed
    sites: tuple[Site, ...]
    datasets: Mapping[str, Dataset]
    egress_usd_per_gb: npt.NDArray[np.float64]  # [from_site, to_site]
    bandwidth_gbps: npt.NDArray[np.float64]  # [from_site, to_site]; inf on the diagonal
    source: str = "<memory>"
    site_index: Mapping[str, int] = field(init=False)
    pools: tuple[Pool, ...] = field(init=False)
    pool_index: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "site_index", {s.name: i for i, s in enumerate(self.sites)})
        pools = tuple(p for s in self.sites for p in s.pools)
        object.__setattr__(self, "pools", pools)
        object.__setattr__(self, "pool_index", {p.key: i for i, p in enumerate(pools)})

    def site(self, name: str) -> Site:
        return self.sites[self.site_index[name]]

    def pool(self, key: str) -> Pool:
        return self.pools[self.pool_index[key]]

    @property
    def jurisdictions(self) -> tuple[str, ...]:
        return tuple(sorted({s.jurisdiction for s in self.sites}))

    def allowed_jurisdictions(self, classification: str) -> tuple[str, ...] | None:
        """Jurisdictions a dataset of this classification may be processed in; None = anywhere."""
        return self.residency.get(classification)

    def total_gpus(self, site: str) -> int:
        s = self.site(site)
        total = sum(p.max_gpus for p in s.pools)
        return min(total, s.burst_quota_gpus) if s.burst_quota_gpus is not None else total

    def with_changes(self, **changes: Any) -> Catalog:
        """A copy with some fields replaced (what-if scenarios); derived indexes are rebuilt."""
        base: dict[str, Any] = {
            "reference_gpu": self.reference_gpu,
            "gpu_models": self.gpu_models,
            "user_regions": self.user_regions,
            "residency": self.residency,
            "sites": self.sites,
            "datasets": self.datasets,
            "egress_usd_per_gb": self.egress_usd_per_gb,
            "bandwidth_gbps": self.bandwidth_gbps,
            "source": self.source,
        }
        base.update(changes)
        return Catalog(**base)


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def parse_catalog(raw: Any, source: str = "<memory>") -> Catalog:
    """Validate a decoded catalog document and build the runtime `Catalog`."""
    if not isinstance(raw, dict):
        raise CatalogError(source, "<root>", "expected a mapping at the top level")
    try:
        doc = CatalogFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CatalogError(source, _format_loc(first["loc"]), first["msg"]) from None
    return _build(doc, source)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog file; None or "default" loads the catalog shipped with Gravity."""
    if path is None or str(path) == DEFAULT_CATALOG:
        ref = importlib.resources.files("placers") / "data" / "default_catalog.yaml"
        return parse_catalog(read_yaml(ref, "default_catalog.yaml"), "default_catalog.yaml")
    return parse_catalog(read_yaml(Path(path), str(path)), str(path))


def read_yaml(path: Path | importlib.resources.abc.Traversable, source: str) -> Any:
    """Decode a YAML file; unreadable or malformed files raise CatalogError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(source, "<file>", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(source, "<yaml>", " ".join(str(exc).split())) from None


def _build(doc: CatalogFile, source: str) -> Catalog:
    def fail(field_path: str, message: str) -> CatalogError:
        return CatalogError(source, field_path, message)

    if doc.reference_gpu not in doc.gpu_models:
        raise fail("reference_gpu", f"{doc.reference_gpu!r} is not one of gpu_models")
    if doc.gpu_models[doc.reference_gpu].speed != 1.0:
        raise fail(f"gpu_models.{doc.reference_gpu}.speed", "the reference GPU must have speed 1.0")
    known_sources = set(doc.sources)

    def check_source(path: str, key: str) -> None:
        if key and known_sources and key not in known_sources:
            raise fail(f"{path}.source", f"{key!r} is not a key of sources")

    for name, g in doc.gpu_models.items():
        check_source(f"gpu_models.{name}", g.source)
    jurisdictions = {s.jurisdiction for s in doc.sites}
    for cls, allowed in doc.residency.items():
        for j in allowed:
            if j not in jurisdictions:
                raise fail(f"residency.{cls}", f"jurisdiction {j!r} has no site")

    sites: list[Site] = []
    seen: set[str] = set()
    for i, s in enumerate(doc.sites):
        at = f"sites[{i}]"
        if s.name in seen:
            raise fail(f"{at}.name", f"duplicate site {s.name!r}")
        seen.add(s.name)
        check_source(at, s.source)
        check_source(f"{at}.egress", s.egress.source)
        if s.region not in doc.user_regions:
            raise fail(f"{at}.region", f"{s.region!r} is not one of user_regions")
        for region in doc.user_regions:
            if region not in s.rtt_ms:
                raise fail(f"{at}.rtt_ms", f"missing RTT to user region {region!r}")
        for region, rtt in s.rtt_ms.items():
            if region not in doc.user_regions:
                raise fail(f"{at}.rtt_ms.{region}", "not one of user_regions")
            if rtt < 0:
                raise fail(f"{at}.rtt_ms.{region}", "must be >= 0")
        if s.kind is SiteKind.CLOUD and s.burst_quota_gpus is None:
            raise fail(f"{at}.burst_quota_gpus", "a cloud site needs a burst quota")
        pools: list[Pool] = []
        pool_names: set[str] = set()
        for k, p in enumerate(s.pools):
            pat = f"{at}.pools[{k}]"
            if p.name in pool_names:
                raise fail(f"{pat}.name", f"duplicate pool {p.name!r} in site {s.name!r}")
            pool_names.add(p.name)
            check_source(pat, p.source)
            if p.gpu_model not in doc.gpu_models:
                raise fail(f"{pat}.gpu_model", f"unknown GPU model {p.gpu_model!r}")
            if s.kind is SiteKind.ONPREM:
                if p.nodes is None:
                    raise fail(f"{pat}.nodes", "an on-prem pool needs a node count")
                if p.spot_usd_per_gpu_hour is not None:
                    raise fail(f"{pat}.spot_usd_per_gpu_hour", "on-prem pools have no spot price")
                nodes, max_gpus = p.nodes, p.nodes * p.gpus_per_node
            else:
                if p.nodes is not None:
                    raise fail(f"{pat}.nodes", "a cloud pool is elastic; give max_gpus, not nodes")
                quota = s.burst_quota_gpus or 0
                max_gpus = min(p.max_gpus, quota) if p.max_gpus is not None else quota
                nodes = max(1, max_gpus // p.gpus_per_node)
            pools.append(
                Pool(
                    site=s.name,
                    name=p.name,
                    gpu_model=p.gpu_model,
                    gpus_per_node=p.gpus_per_node,
                    nodes=nodes,
                    max_gpus=max_gpus,
                    cpus_per_node=p.cpus_per_node,
                    memory_gb_per_node=p.memory_gb_per_node,
                    usd_per_gpu_hour=p.usd_per_gpu_hour,
                    spot_usd_per_gpu_hour=p.spot_usd_per_gpu_hour,
                    dedicated=p.dedicated,
                    elastic=s.kind is SiteKind.CLOUD,
                )
            )
        sites.append(
            Site(
                name=s.name,
                kind=s.kind,
                provider=s.provider,
                jurisdiction=s.jurisdiction,
                region=s.region,
                pools=tuple(pools),
                burst_quota_gpus=s.burst_quota_gpus,
                storage_usd_per_gb_month=s.storage_usd_per_gb_month,
                rtt_ms=dict(s.rtt_ms),
                ray_address=s.ray_address,
            )
        )

    index = {s.name: i for i, s in enumerate(sites)}
    n = len(sites)
    egress = np.zeros((n, n))
    bandwidth = np.full((n, n), np.inf)
    for a, sa in enumerate(doc.sites):
        for b, sb in enumerate(doc.sites):
            if a == b:
                continue
            same_provider = sa.provider == sb.provider and sa.kind is SiteKind.CLOUD
            if same_provider and sa.jurisdiction == sb.jurisdiction and sa.egress.same_provider_usd_per_gb is not None:
                egress[a, b] = sa.egress.same_provider_usd_per_gb
            elif same_provider and sa.egress.same_provider_intercontinental_usd_per_gb is not None:
                egress[a, b] = sa.egress.same_provider_intercontinental_usd_per_gb
            else:
                egress[a, b] = sa.egress.internet_usd_per_gb
            bandwidth[a, b] = min(sa.uplink_gbps, sb.uplink_gbps)
    for i, link in enumerate(doc.links):
        at = f"links[{i}]"
        check_source(at, link.source)
        for end, name in (("from", link.from_site), ("to", link.to_site)):
            if name not in index:
                raise fail(f"{at}.{end}", f"unknown site {name!r}")
        a, b = index[link.from_site], index[link.to_site]
        if a == b:
            raise fail(at, "a link joins two different sites")
        for x, y in ((a, b), (b, a)) if link.symmetric else ((a, b),):
            if link.egress_usd_per_gb is not None:
                egress[x, y] = link.egress_usd_per_gb
            if link.bandwidth_gbps is not None:
                bandwidth[x, y] = link.bandwidth_gbps

    datasets: dict[str, Dataset] = {}
    for i, d in enumerate(doc.datasets):
        at = f"datasets[{i}]"
        if d.id in datasets:
            raise fail(f"{at}.id", f"duplicate dataset {d.id!r}")
        for r in d.replica_sites:
            if r not in index:
                raise fail(f"{at}.replica_sites", f"unknown site {r!r}")
        datasets[d.id] = Dataset(d.id, d.size_gb, tuple(d.replica_sites), d.classification)

    egress.setflags(write=False)
    bandwidth.setflags(write=False)
    return Catalog(
        reference_gpu=doc.reference_gpu,
        gpu_models={k: GpuModel(k, v.speed, v.memory_gb) for k, v in doc.gpu_models.items()},
        user_regions=tuple(doc.user_regions),
        residency={k: tuple(v) for k, v in doc.residency.items()},
        sites=tuple(sites),
        datasets=datasets,
        egress_usd_per_gb=egress,
        bandwidth_gbps=bandwidth,
        source=source,
    )
