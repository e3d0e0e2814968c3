"""The contract between Gravity's Ray executor and its launcher. Standard library only: this
package is uploaded to every Ray cluster as a `py_modules` entry and imported there as
`gravity_gang`, where nothing of Gravity but this package exists.

The executor hands the launcher a `GangPlan` as JSON in the environment variable PLAN_ENV.
The launcher answers with *protocol lines* on its stdout (the Ray job's driver log), each
`GRAVITY-<KIND> <json>`; the executor reads them from the log tail it fetches anyway and
drops them from the tail it shows the user:

    GRAVITY-PLACED  {"ranks": [{"replica", "rank", "node_ip", "node_id", "worker_pid", "gpu_ids",
                                "cuda_visible_devices"}]}
    GRAVITY-HEALTH  {"state", "ready", "replicas", "endpoints", "restarts"}   services only
    GRAVITY-EVENT   {"text"}   a replica failed or was restarted
    GRAVITY-CAUSE   {"kind", "text"}   why the launcher itself ended the attempt

A CAUSE line means the user's command did not decide the outcome: the gang could not be
placed in time (`unplaceable`), or a Ray worker or node holding a rank died (`worker_died`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PLAN_ENV = "GRAVITY_GANG_PLAN"
LINE_PREFIX = "GRAVITY-"

#: The launcher's exit status when it, not the user's command, ends the attempt (see CAUSE).
EXIT_LAUNCHER = 75


class LineKind(enum.StrEnum):
    PLACED = "PLACED"
    HEALTH = "HEALTH"
    EVENT = "EVENT"
    CAUSE = "CAUSE"


class CauseKind(enum.StrEnum):
    UNPLACEABLE = "unplaceable"  # the placement group was not ready within the plan's timeout
    WORKER_DIED = "worker_died"  # a Ray worker (or its node) holding a rank died
    LAUNCHER = "launcher"  # the launcher failed (a bug, a bad plan): details in the text


class HealthState(enum.StrEnum):
    STARTING = "starting"  # no replica ready yet, none failed
    HEALTHY = "healthy"  # every replica ready
    DEGRADED = "degraded"  # some replicas ready
    UNHEALTHY = "unhealthy"  # none ready after a failure


@dataclass(frozen=True, slots=True)
class RankSpec:
    """One process of the gang: one placement-group bundle, and the actor that runs the command in it.

    `resources` are the bundle's custom resources (e.g. {"site:onprem-fra": 4}); the bundle also
    holds `gpus` GPUs, `cpus` CPUs and `memory_bytes` of memory, which the rank's actor takes."""

    gpus: float
    cpus: float = 0.0
    memory_bytes: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)

    def bundle(self) -> dict[str, float]:
        out: dict[str, float] = {"GPU": self.gpus} if self.gpus > 0 else {}
        if self.cpus > 0:
            out["CPU"] = self.cpus
        if self.memory_bytes > 0:
            out["memory"] = float(self.memory_bytes)
        out.update(self.resources)
        return out


@dataclass(frozen=True, slots=True)
class GangPlan:
    """What to run and how to hold it: `groups` is one tuple of ranks per replica (a batch or
    training job has one group). All bundles go into one placement group with `strategy`."""

    submission_id: str
    command: str
    groups: tuple[tuple[RankSpec, ...], ...]
    strategy: str  # STRICT_PACK | PACK | SPREAD | STRICT_SPREAD
    ready_timeout_s: float
    service: bool = False  # run until stopped; restart failed replicas
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 30.0
    health_every_s: float = 10.0
    poll_s: float = 0.25

    @property
    def ranks(self) -> list[RankSpec]:
        return [r for g in self.groups for r in g]

    def bundles(self) -> list[dict[str, float]]:
        return [r.bundle() for r in self.ranks]

    def to_json(self) -> str:
        return json.dumps(
            {
                "submission_id": self.submission_id,
                "command": self.command,
                "groups": [
                    [
                        {"gpus": r.gpus, "cpus": r.cpus, "memory_bytes": r.memory_bytes, "resources": dict(r.resources)}
                        for r in g
                    ]
                    for g in self.groups
                ],
                "strategy": self.strategy,
                "ready_timeout_s": self.ready_timeout_s,
                "service": self.service,
                "restart_backoff_s": self.restart_backoff_s,
                "restart_backoff_max_s": self.restart_backoff_max_s,
                "health_every_s": self.health_every_s,
                "poll_s": self.poll_s,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> GangPlan:
        d = json.loads(text)
        groups = tuple(
            tuple(RankSpec(float(r["gpus"]), float(r["cpus"]), int(r["memory_bytes"]), dict(r["resources"])) for r in g)
            for g in d["groups"]
        )
        if not groups or not all(groups):
            raise ValueError(f"{PLAN_ENV}: a plan needs at least one group of at least one rank")
        return cls(
            submission_id=str(d["submission_id"]),
            command=str(d["command"]),
            groups=groups,
            strategy=str(d["strategy"]),
            ready_timeout_s=float(d["ready_timeout_s"]),
            service=bool(d["service"]),
            restart_backoff_s=float(d["restart_backoff_s"]),
            restart_backoff_max_s=float(d["restart_backoff_max_s"]),
            health_every_s=float(d["health_every_s"]),
            poll_s=float(d["poll_s"]),
        )


@dataclass(frozen=True, slots=True)
class Health:
    state: HealthState
    ready: int
    replicas: int
    endpoints: tuple[str, ...] = ()
    restarts: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "ready": self.ready,
            "replicas": self.replicas,
            "endpoints": list(self.endpoints),
            "restarts": self.restarts,
        }

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Health:
        return cls(
            HealthState(payload["state"]),
            int(payload["ready"]),
            int(payload["replicas"]),
            tuple(str(e) for e in payload.get("endpoints", ())),
            int(payload.get("restarts", 0)),
        )


def line(kind: LineKind, payload: Mapping[str, Any]) -> str:
    return f"{LINE_PREFIX}{kind} {json.dumps(payload, separators=(',', ':'), sort_keys=True)}"


@dataclass(frozen=True, slots=True)
class LauncherOutput:
    """A driver log split into what the user's command printed and the launcher's records."""

    user_lines: tuple[str, ...]
    records: tuple[tuple[LineKind, dict[str, Any]], ...]

    def last(self, kind: LineKind) -> dict[str, Any] | None:
        for k, found in reversed(self.records):
            if k is kind:
                payload: dict[str, Any] = found
                return payload
        return None

    def cause(self) -> tuple[CauseKind, str] | None:
        found = self.last(LineKind.CAUSE)
        if found is None:
            return None
        try:
            return CauseKind(str(found.get("kind"))), str(found.get("text", ""))
        except ValueError:
            return CauseKind.LAUNCHER, str(found.get("text", ""))

    def health(self) -> Health | None:
        found = self.last(LineKind.HEALTH)
        if found is None:
            return None
        try:
            return Health.of(found)
        except (KeyError, ValueError, TypeError):
            return None


def split_output(lines: Sequence[str]) -> LauncherOutput:
    """Separate protocol lines (well-formed ones only) from the rest."""
    user: list[str] = []
    records: list[tuple[LineKind, dict[str, Any]]] = []
    for text in lines:
        if text.startswith(LINE_PREFIX):
            head, _, body = text[len(LINE_PREFIX) :].partition(" ")
            try:
                kind = LineKind(head)
                payload = json.loads(body)
            except ValueError:
                user.append(text)
                continue
            if isinstance(payload, dict):
                records.append((kind, payload))
                continue
        user.append(text)
    return LauncherOutput(tuple(user), tuple(records))
