"""Job files: the YAML a person writes, turned into gravity.v1.JobSpec messages.

The format mirrors the JobSpec field names, friendlier where it helps:

    name: eu-support-finetune
    kind: training                  # training | batch | inference
    gpus: 8
    single_node: true
    runtime: 6h                     # or runtime_s: 21600 (estimated, on the catalog's reference GPU)
    deadline: +12h                  # or RFC3339: 2026-05-01T18:00:00Z (training and batch only)
    datasets:
      - eu-customer-support-2026    # a catalog dataset
      - {id: my-shards, size_gb: 300, replica_sites: [onprem-fra], classification: internal}
    tags: {project: support-bot, team: ml-eu, owner: ana}   # the five named tags, the rest go to extra
    entrypoint: python train.py     # or a list of arguments, joined with shell quoting

A file holds one spec, a list of specs, or a mapping `jobs: [...]`. Unknown keys, wrong types and
duplicate keys raise JobFileError naming the file and the field (`job.yaml: gpus: expected an
integer, got 'eight'`). Semantic checks (is the site known, is the deadline ahead) are the server's.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import sys
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from gravity.v1 import scheduler_pb2 as pb
from placers.domain import WELL_KNOWN_TAGS

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
STDIN = "-"

KINDS = {
    "training": pb.JOB_KIND_TRAINING,
    "batch": pb.JOB_KIND_BATCH,
    "inference": pb.JOB_KIND_INFERENCE,
}
_DURATION = re.compile(r"^\s*\+?\s*((?:\d+(?:\.\d+)?\s*[dhms]\s*)+)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class JobFileError(ValueError):
    """A job file that cannot become JobSpecs; `field` is its path in the file (`jobs[1].gpus`)."""

    def __init__(self, source: str, field: str, message: str) -> None:
        super().__init__(f"{source}: {field}: {message}" if field else f"{source}: {message}")
        self.source = source
        self.field = field
        self.message = message


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# ---------------------------------------------------------------------- loading


def load_job_file(path: str, now: float | None = None) -> list[pb.JobSpec]:
    """Read a job file (`-` is standard input) and return its specs, in file order."""
    source = "<stdin>" if path == STDIN else path
    try:
        text = sys.stdin.read() if path == STDIN else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise JobFileError(source, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise JobFileError(source, "", "not a UTF-8 text file") from None
    return parse_job_text(text, source, now)


def parse_job_text(text: str, source: str, now: float | None = None) -> list[pb.JobSpec]:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise JobFileError(source, "", f"not valid YAML: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise JobFileError(source, "", f"not valid YAML: {exc}") from None
    return parse_jobs(data, source, now)


def parse_jobs(data: Any, source: str, now: float | None = None) -> list[pb.JobSpec]:
    """Decoded YAML (one spec, a list, or {jobs: [...]}) -> JobSpecs. `now` anchors relative deadlines."""
    anchor = datetime.now().timestamp() if now is None else now
    if isinstance(data, Mapping) and "jobs" in data:
        others = [k for k in data if k != "jobs"]
        if others:
            raise JobFileError(source, str(others[0]), "a file with `jobs:` holds nothing else")
        items, prefix = data["jobs"], "jobs"
        if not isinstance(items, list):
            raise JobFileError(source, "jobs", f"expected a list of job specs, got {_describe(items)}")
    elif isinstance(data, list):
        items, prefix = data, ""
    elif isinstance(data, Mapping):
        items, prefix = [data], None
    elif data is None:
        raise JobFileError(source, "", "no job specs in the file")
    else:
        raise JobFileError(source, "", f"expected a job spec (a mapping), got {_describe(data)}")
    if not items:
        raise JobFileError(source, prefix or "", "no job specs in the file")
    specs = []
    for i, item in enumerate(items):
        at = "" if prefix is None else f"{prefix}[{i}]"
        try:
            specs.append(_spec(item, anchor))
        except _FieldError as exc:
            field = f"{at}.{exc.field}" if at and exc.field else (at or exc.field)
            raise JobFileError(source, field, exc.message) from None
    return specs


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: with plain YAML the last one silently wins."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# ---------------------------------------------------------------------- one spec


def _spec(raw: Any, now: float) -> pb.JobSpec:
    fields = _mapping(raw, "", "a job spec")
    _known_keys(fields, _SPEC_FIELDS, "")
    if "runtime" in fields and "runtime_s" in fields:
        raise _FieldError("runtime", "give runtime or runtime_s, not both")
    m = pb.JobSpec()
    for key, value in fields.items():
        _SPEC_FIELDS[key](m, value, key, now)
    return m


def _set(name: str, check: Callable[[Any, str], Any]) -> Callable[[pb.JobSpec, Any, str, float], None]:
    def apply(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
        setattr(m, name, check(value, at))

    return apply


def _set_list(name: str) -> Callable[[pb.JobSpec, Any, str, float], None]:
    def apply(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
        getattr(m, name).extend(_strings(value, at))

    return apply


def _kind(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    text = _string(value, at).strip().lower().removeprefix("job_kind_")
    if text not in KINDS:
        raise _FieldError(at, f"expected training, batch or inference, got {value!r}")
    m.kind = KINDS[text]


def _runtime(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    m.runtime_s = parse_duration_s(value, at)


def _deadline(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    hint = "an RFC3339 time such as 2026-05-01T18:00:00Z, or a time from now such as +6h, +30m, +2d"
    if isinstance(value, datetime):  # YAML decodes unquoted timestamps itself
        when = value
    elif isinstance(value, date):
        raise _FieldError(at, f"a date alone is ambiguous; expected {hint}")
    elif isinstance(value, str) and value.strip().startswith("+"):
        m.deadline.FromNanoseconds(round((now + parse_duration_s(value, at)) * 1e9))
        return
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _FieldError(at, f"expected {hint}, got {value!r}") from None
    else:
        raise _FieldError(at, f"expected {hint}, got {_describe(value)}")
    if when.tzinfo is None:
        raise _FieldError(at, f"{when.isoformat()} has no time zone; add one, e.g. Z for UTC")
    m.deadline.FromNanoseconds(round(when.timestamp() * 1e9))


def _tags(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    tags = _mapping(value, at, "a mapping of tag names to values")
    for key, item in tags.items():
        if key == "extra" and isinstance(item, Mapping):  # the wire shape, accepted as well
            for k, v in _mapping(item, f"{at}.extra", "a mapping").items():
                m.tags.extra[_key(k, f"{at}.extra")] = _text(v, f"{at}.extra.{k}")
            continue
        name = _key(key, at)
        text = _text(item, f"{at}.{name}")
        if name in WELL_KNOWN_TAGS:
            setattr(m.tags, name, text)
        else:
            m.tags.extra[name] = text


def _env(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    for key, item in _mapping(value, at, "a mapping of variable names to values").items():
        name = _key(key, at)
        m.env[name] = _text(item, f"{at}.{name}")


def _entrypoint(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    if isinstance(value, list):
        m.entrypoint = shlex.join(_strings(value, at))
    else:
        m.entrypoint = _string(value, at)


def _datasets(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    if not isinstance(value, list):
        raise _FieldError(at, f"expected a list of dataset ids or mappings, got {_describe(value)}")
    for i, item in enumerate(value):
        here = f"{at}[{i}]"
        if isinstance(item, str):
            m.datasets.add(catalog_id=item)
            continue
        d = _mapping(item, here, "a dataset id or a mapping {id, size_gb, replica_sites, classification}")
        if set(d) == {"catalog_id"}:  # the wire shape
            m.datasets.add(catalog_id=_string(d["catalog_id"], f"{here}.catalog_id"))
            continue
        if set(d) == {"inline"}:  # the wire shape
            here, d = f"{here}.inline", _mapping(d["inline"], f"{here}.inline", "a dataset mapping")
        _known_keys(d, _DATASET_KEYS, here)
        if set(d) == {"id"}:  # {id: x} alone names a catalog dataset
            m.datasets.add(catalog_id=_string(d["id"], f"{here}.id"))
            continue
        m.datasets.add(
            inline=pb.Dataset(
                id=_string(d.get("id", ""), f"{here}.id"),
                size_gb=_number(d.get("size_gb", 0.0), f"{here}.size_gb"),
                replica_sites=_strings(d.get("replica_sites", []), f"{here}.replica_sites"),
                classification=_string(d.get("classification", ""), f"{here}.classification"),
            )
        )


def _inference(m: pb.JobSpec, value: Any, at: str, now: float) -> None:
    inf = _mapping({} if value is None else value, at, "a mapping of inference settings")
    _known_keys(inf, _INFERENCE_KEYS, at)
    m.inference.SetInParent()
    for key, item in inf.items():
        here = f"{at}.{key}"
        if key == "user_regions":
            m.inference.user_regions.extend(_strings(item, here))
        else:
            setattr(m.inference, key, _INFERENCE_KEYS[key](item, here))


# ---------------------------------------------------------------------- values


def parse_duration_s(value: Any, at: str) -> float:
    """`6h`, `90m`, `1h30m`, `2d`, `45s` or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(match.group(1)))
    raise _FieldError(at, f"expected a duration such as 6h, 30m, 1h30m, 2d or seconds, got {_describe(value)}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, datetime | date):
        return f"the timestamp {value.isoformat()}"
    return repr(value)


def _mapping(value: Any, at: str, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise _FieldError(at, f"expected {what}, got {_describe(value)}")
    return value


def _known_keys(fields: Mapping[Any, Any], known: Collection[str], at: str) -> None:
    for key in fields:
        if not isinstance(key, str):
            raise _FieldError(at, f"field names must be strings, got {_describe(key)}")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise _FieldError(f"{at}.{key}" if at else key, f"unknown field{hint}")


def _key(key: Any, at: str) -> str:
    if not isinstance(key, str) or not key:
        raise _FieldError(at, f"keys must be non-empty strings, got {_describe(key)}")
    return key


def _int32(value: Any, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(at, f"expected an integer, got {_describe(value)}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise _FieldError(at, f"{value} is out of range for an integer field")
    return value


def _number(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(at, f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise _FieldError(at, f"expected a finite number, got {value}")
    return float(value)


def _bool(value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(at, f"expected true or false, got {_describe(value)}")
    return value


def _string(value: Any, at: str) -> str:
    if not isinstance(value, str):
        raise _FieldError(at, f"expected a string, got {_describe(value)}")
    return value


def _text(value: Any, at: str) -> str:
    """A tag or env value: strings and numbers (as written); booleans must be quoted to be unambiguous."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    hint = " (quote it: YAML reads yes/no/true/false as booleans)" if isinstance(value, bool) else ""
    raise _FieldError(at, f"expected a string, got {_describe(value)}{hint}")


def _strings(value: Any, at: str) -> list[str]:
    """A list of strings; a single string is taken as a list of one."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _FieldError(at, f"expected a list of strings, got {_describe(value)}")
    return [_string(item, f"{at}[{i}]") for i, item in enumerate(value)]


_SPEC_FIELDS: dict[str, Callable[[pb.JobSpec, Any, str, float], None]] = {
    "name": _set("name", _string),
    "kind": _kind,
    "gpus": _set("gpus", _int32),
    "gpu_milli": _set("gpu_milli", _int32),
    "gpu_models": _set_list("gpu_models"),
    "cpus": _set("cpus", _number),
    "memory_gb": _set("memory_gb", _number),
    "single_node": _set("single_node", _bool),
    "runtime_s": _set("runtime_s", _number),
    "runtime": _runtime,
    "deadline": _deadline,
    "priority": _set("priority", _int32),
    "tags": _tags,
    "datasets": _datasets,
    "allowed_jurisdictions": _set_list("allowed_jurisdictions"),
    "allowed_sites": _set_list("allowed_sites"),
    "max_cost_usd": _set("max_cost_usd", _number),
    "spot_ok": _set("spot_ok", _bool),
    "inference": _inference,
    "entrypoint": _entrypoint,
    "env": _env,
    "request_id": _set("request_id", _string),
    "max_retries": _set("max_retries", _int32),
}
_DATASET_KEYS = frozenset({"id", "size_gb", "replica_sites", "classification"})
_INFERENCE_KEYS: dict[str, Callable[[Any, str], Any]] = {
    "latency_slo_ms": _number,
    "user_regions": _strings,
    "replicas": _int32,
    "dedicated": _bool,
    "spread": _bool,
}
