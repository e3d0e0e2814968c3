"""Admission: is a JobSpec well-formed against this catalog? Errors name the field.

Field paths follow the wire names of gravity.v1.JobSpec (e.g. `datasets[1].inline.size_gb`),
so an INVALID_ARGUMENT tells the client exactly what to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from placers.catalog import Catalog
from placers.domain import Dataset, JobKind, JobSpec
from scheduler.settings import TagRule

MAX_GPUS = 4096
MAX_NAME = 253
MAX_REQUEST_ID = 128
MAX_RETRIES = 100
PRIORITY_RANGE = (-1000, 1000)
MAX_RUNTIME_S = 366 * 86400.0
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InvalidSpec(ValueError):
    """A spec the scheduler will not accept; `field` is its path in the JobSpec."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def under(self, prefix: str) -> InvalidSpec:
        return InvalidSpec(f"{prefix}.{self.field}", self.message)


def validate(spec: JobSpec, catalog: Catalog, now: float, taxonomy: Mapping[str, TagRule] | None = None) -> None:
    """Raise InvalidSpec for the first problem found; return quietly for a spec Gravity can schedule.
    `taxonomy` (settings.finops.tags) lists the tags every job must carry and the values allowed."""

    def bad(field: str, message: str) -> InvalidSpec:
        return InvalidSpec(field, message)

    if not spec.name.strip():
        raise bad("name", "must not be empty")
    if len(spec.name) > MAX_NAME:
        raise bad("name", f"longer than {MAX_NAME} characters")
    if not isinstance(spec.kind, JobKind):
        raise bad("kind", "must be training, batch or inference")
    if spec.gpus <= 0:
        raise bad("gpus", f"must be at least 1 (got {spec.gpus})")
    if spec.gpus > MAX_GPUS:
        raise bad("gpus", f"must be at most {MAX_GPUS}")
    if not 1 <= spec.gpu_milli <= 1000:
        raise bad("gpu_milli", "must be between 1 and 1000 (thousandths of one GPU)")
    if spec.gpu_milli < 1000 and spec.gpus != 1:
        raise bad("gpu_milli", "a shared (fractional) GPU request must ask for exactly 1 GPU")
    for i, model in enumerate(spec.gpu_models):
        if model not in catalog.gpu_models:
            known = ", ".join(sorted(catalog.gpu_models))
            raise bad(f"gpu_models[{i}]", f"unknown GPU model {model!r} (known: {known})")
    for name, value in (("cpus", spec.cpus), ("memory_gb", spec.memory_gb)):
        if not math.isfinite(value) or value < 0:
            raise bad(name, "must be a finite number >= 0")
    if spec.kind is JobKind.INFERENCE:
        if spec.deadline_at is not None:
            raise bad("deadline", "an inference service has no deadline; use inference.latency_slo_ms")
        if not math.isfinite(spec.runtime_s) or spec.runtime_s < 0:
            raise bad("runtime_s", "must be a finite number >= 0")
    elif not math.isfinite(spec.runtime_s) or not 0 < spec.runtime_s <= MAX_RUNTIME_S:
        raise bad(
            "runtime_s", f"must be > 0 and at most {MAX_RUNTIME_S:.0f} s (estimated runtime on the reference GPU)"
        )
    if spec.deadline_at is not None and spec.deadline_at <= now:
        raise bad("deadline", "is in the past")
    if not PRIORITY_RANGE[0] <= spec.priority <= PRIORITY_RANGE[1]:
        raise bad("priority", f"must be within {PRIORITY_RANGE[0]}..{PRIORITY_RANGE[1]}")
    for key, tag in spec.tags.items():
        if not key or not isinstance(tag, str):
            raise bad("tags", "tag keys must be non-empty strings")
        if "=" in key or "," in key:
            raise bad(f"tags.{key}", "a tag key may not contain '=' or ','")
    if taxonomy:
        check_tags(spec.tags, taxonomy)
    _validate_datasets(spec, catalog)
    for i, j in enumerate(spec.allowed_jurisdictions):
        if j not in catalog.jurisdictions:
            raise bad(
                f"allowed_jurisdictions[{i}]", f"unknown jurisdiction {j!r} (known: {', '.join(catalog.jurisdictions)})"
            )
    for i, site in enumerate(spec.allowed_sites):
        if site not in catalog.site_index:
            raise bad(f"allowed_sites[{i}]", f"unknown site {site!r}")
    if spec.max_cost_usd is not None and not (math.isfinite(spec.max_cost_usd) and spec.max_cost_usd > 0):
        raise bad("max_cost_usd", "must be > 0 when set")
    if spec.inference is not None:
        if spec.kind is not JobKind.INFERENCE:
            raise bad("inference", "only an inference job takes inference settings")
        inf = spec.inference
        if not math.isfinite(inf.latency_slo_ms) or inf.latency_slo_ms < 0:
            raise bad("inference.latency_slo_ms", "must be >= 0")
        if inf.latency_slo_ms > 0 and not inf.user_regions:
            raise bad("inference.user_regions", "a latency SLO needs the user regions it is measured to")
        for i, region in enumerate(inf.user_regions):
            if region not in catalog.user_regions:
                raise bad(
                    f"inference.user_regions[{i}]",
                    f"unknown user region {region!r} (known: {', '.join(catalog.user_regions)})",
                )
        if not 1 <= inf.replicas <= 1024:
            raise bad("inference.replicas", "must be between 1 and 1024")
    if not spec.entrypoint.strip():
        raise bad("entrypoint", "must not be empty")
    for key in spec.env:
        if not _ENV_KEY.match(key):
            raise bad(f"env.{key}", "not a valid environment variable name")
    if len(spec.request_id) > MAX_REQUEST_ID:
        raise bad("request_id", f"longer than {MAX_REQUEST_ID} characters")
    if not 0 <= spec.max_retries <= MAX_RETRIES:
        raise bad("max_retries", f"must be within 0..{MAX_RETRIES}")


def check_tags(tags: Mapping[str, str], taxonomy: Mapping[str, TagRule]) -> None:
    """The tag taxonomy: every required tag present, every governed tag with an allowed value."""
    for key, rule in taxonomy.items():
        value = tags.get(key, "")
        if not value:
            if rule.required:
                hint = ""
                if rule.allowed:
                    hint = f" (one of {', '.join(rule.allowed)})"
                elif rule.pattern:
                    hint = f" (matching /{rule.pattern}/)"
                raise InvalidSpec(f"tags.{key}", f"required tag missing{hint}")
            continue
        problem = rule.check(value)
        if problem is not None:
            raise InvalidSpec(f"tags.{key}", problem)


def _validate_datasets(spec: JobSpec, catalog: Catalog) -> None:
    seen: set[str] = set()
    for i, ref in enumerate(spec.datasets):
        if isinstance(ref, str):
            if ref not in catalog.datasets:
                raise InvalidSpec(f"datasets[{i}].catalog_id", f"unknown dataset {ref!r}")
            did = ref
        else:
            at = f"datasets[{i}].inline"
            if not ref.id.strip():
                raise InvalidSpec(f"{at}.id", "must not be empty")
            if not (math.isfinite(ref.size_gb) and ref.size_gb > 0):
                raise InvalidSpec(f"{at}.size_gb", "must be > 0")
            if not ref.replica_sites:
                raise InvalidSpec(f"{at}.replica_sites", "name at least one site that holds the data")
            for k, site in enumerate(ref.replica_sites):
                if site not in catalog.site_index:
                    raise InvalidSpec(f"{at}.replica_sites[{k}]", f"unknown site {site!r}")
            known = catalog.datasets.get(ref.id)
            if known is not None and known != ref:
                raise InvalidSpec(f"{at}.id", f"{ref.id!r} is a catalog dataset; refer to it by catalog_id")
            did = ref.id
        if did in seen:
            raise InvalidSpec(f"datasets[{i}]", f"dataset {did!r} listed twice")
        seen.add(did)


def resolve_datasets(spec: JobSpec, catalog: Catalog) -> tuple[Dataset, ...]:
    """The full Dataset records a (validated) spec reads."""
    return tuple(catalog.datasets[r] if isinstance(r, str) else r for r in spec.datasets)


def validate_batch(
    specs: Sequence[JobSpec],
    catalog: Catalog,
    now: float,
    prefix: str = "specs",
    taxonomy: Mapping[str, TagRule] | None = None,
) -> None:
    """All-or-nothing: the first bad spec of a batch fails the whole batch, named by index."""
    for i, spec in enumerate(specs):
        try:
            validate(spec, catalog, now, taxonomy)
        except InvalidSpec as exc:
            raise exc.under(f"{prefix}[{i}]") from None
