"""The embedded Ray cluster: a local Ray head that stands in for the catalog sites without a
cluster of their own (and, in tests, one head per site, plus extra nodes with `add_node`).

Started as a child process (`ray start --head --block`) rather than in-process with `ray.init()`:

* every port is chosen here (`ray.init()` cannot set the dashboard agent's port and always takes
  52365, so a second local Ray on the same host, such as another test session, cannot run jobs);
* the scheduler process stays a plain HTTP client of Ray's Job Submission API, exactly as it is
  of a remote cluster, with no Ray driver, no global `ray` state and no change to its environment
  (in-process `ray.init()` sets RAY_AUTH_MODE=token in `os.environ`);
* it is stopped by its process group, never by `ray stop` (which stops every Ray of the user).

Token authentication is on: a fresh random token per cluster, passed to Ray in its environment
and to clients as an `Authorization: Bearer` header (`LocalRayCluster.headers`). The child gets
SIGTERM if the process that started it dies (Linux), and `ray start --block` then stops the
Ray processes it started. `add_node` joins more nodes (`ray start --address`, each its own process
group, temp dir and ports): a multi-node cluster on one machine, for gangs that span nodes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("gravity.executor.ray")

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1


def site_resource(site: str) -> str:
    """The custom Ray resource that stands for the GPUs of a site's shared pools: `site:<name>`."""
    return f"site:{site}"


def pool_resource(site: str, pool: str) -> str:
    """The custom Ray resource that stands for one pool's GPUs: `pool:<site>/<pool>`. Required on
    the nodes of a dedicated pool (which advertise no `site:` resource, so batch work cannot land
    there); optional elsewhere (when advertised, jobs placed in the pool ask for it too)."""
    return f"pool:{site}/{pool}"


def free_port() -> int:
    """A TCP port nobody listens on right now (the usual bind-to-0 probe; racy but short-lived)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRayError(RuntimeError):
    """The embedded Ray cluster did not come up."""


class _RayProcess:
    """A `ray start --block` process group this process owns, with its temp dir and log."""

    def __init__(self, process: subprocess.Popen[bytes], temp_dir: Path, log_path: Path) -> None:
        self.process = process
        self.temp_dir = temp_dir
        self.log_path = log_path
        self._closed = False

    def output_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to `ray start --block` (it stops its Ray processes), then SIGKILL to the group."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        _stop_group(self.process, timeout_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class LocalRayCluster(_RayProcess):
    """A single-node Ray head owned by this process. Build with `start`; `close` stops it."""

    def __init__(
        self, process: subprocess.Popen[bytes], address: str, token: str, temp_dir: Path, log_path: Path
    ) -> None:
        super().__init__(process, temp_dir, log_path)
        self.address = address  # the dashboard (Job Submission API) URL, http://127.0.0.1:<port>
        self.token = token
        self.gcs_address = ""  # host:port that `ray start --address` joins

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @classmethod
    def start(
        cls,
        *,
        gpus: int,
        resources: Mapping[str, float],
        num_cpus: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        wait: bool = True,
    ) -> LocalRayCluster:
        """Start the head with `gpus` logical GPUs and the given custom resources; wait until the
        Job Submission API answers (unless `wait` is False: then call `wait_ready`). Raises
        LocalRayError (with the end of Ray's output) on failure.

        Call it from a thread that outlives the cluster (the main thread, say): Linux delivers the
        parent-death signal when the *thread* that started the child exits."""
        temp_dir = Path(tempfile.mkdtemp(prefix="gravity-ray-"))
        log_path = temp_dir / "ray-start.log"
        token = secrets.token_hex(32)
        dashboard_port, gcs_port = free_port(), free_port()
        cmd = [
            *_ray_start(temp_dir, gpus, resources, num_cpus),
            "--head",
            "--port", str(gcs_port),
            "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port),
            "--ray-client-server-port", str(free_port()),
        ]  # fmt: skip
        process = _spawn(cmd, token, log_path)
        cluster = cls(process, f"http://127.0.0.1:{dashboard_port}", token, temp_dir, log_path)
        cluster.gcs_address = f"127.0.0.1:{gcs_port}"
        atexit.register(cluster.close)
        if wait:
            cluster.wait_ready(ready_timeout_s)
        log.info("embedded Ray started at %s (pid %d, %d logical GPUs)", cluster.address, process.pid, gpus)
        return cluster

    def add_node(
        self,
        *,
        gpus: int,
        resources: Mapping[str, float],
        num_cpus: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> LocalRayNode:
        """Start one more node (`ray start --address`) joined to this head, as another process group
        with its own temp dir and ports: a second machine of the cluster, on this one. Returns once
        the head lists it ALIVE (recognised by a marker resource of its own)."""
        marker = f"gravity-node-{secrets.token_hex(6)}"
        temp_dir = Path(tempfile.mkdtemp(prefix="gravity-ray-node-"))
        log_path = temp_dir / "ray-start.log"
        cmd = [*_ray_start(temp_dir, gpus, {**resources, marker: 1.0}, num_cpus), "--address", self.gcs_address]
        node = LocalRayNode(_spawn(cmd, self.token, log_path), temp_dir, log_path)
        atexit.register(node.close)
        deadline = time.monotonic() + ready_timeout_s
        try:
            while True:
                if node.process.poll() is not None:
                    code = node.process.returncode
                    raise LocalRayError(f"ray start (node) exited with code {code}: {node.output_tail()}")
                found = [n for n, res in self.alive_nodes().items() if marker in res]
                if found:
                    node.node_id = found[0]
                    return node
                if time.monotonic() > deadline:
                    raise LocalRayError(f"the new Ray node did not join {self.address} within {ready_timeout_s:.0f} s")
                time.sleep(0.5)
        except BaseException:
            node.close()
            raise

    def alive_nodes(self) -> dict[str, dict[str, float]]:
        """Node id -> total resources, of the nodes the head lists ALIVE (its state API); {} when it
        does not answer."""
        request = urllib.request.Request(f"{self.address}/api/v0/nodes?detail=1", headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=10.0) as r:
                body = json.loads(r.read())
        except (OSError, urllib.error.URLError, ValueError):
            return {}
        nodes = body["data"]["result"]["result"]
        return {n["node_id"]: dict(n.get("resources_total") or {}) for n in nodes if n.get("state") == "ALIVE"}

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the Job Submission API answers; on failure the cluster is closed and LocalRayError raised."""
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        request = urllib.request.Request(f"{self.address}/api/version", headers=self.headers)
        while True:
            if self.process.poll() is not None:
                raise LocalRayError(f"ray start exited with code {self.process.returncode}: {self.output_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=2.0) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise LocalRayError(f"Ray did not answer at {self.address} within {timeout_s:.0f} s")
            time.sleep(0.2)

    def alive(self) -> bool:
        return not self._closed and self.process.poll() is None


class LocalRayNode(_RayProcess):
    """A worker node started by `LocalRayCluster.add_node`; `close` stops it (like a machine going away)."""

    def __init__(self, process: subprocess.Popen[bytes], temp_dir: Path, log_path: Path) -> None:
        super().__init__(process, temp_dir, log_path)
        self.node_id = ""

    def kill(self) -> None:
        """The machine dies: SIGKILL to the node's whole process group (raylet, workers), no goodbye."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.close(timeout_s=5.0)


def _ray_start(temp_dir: Path, gpus: int, resources: Mapping[str, float], num_cpus: int | None) -> list[str]:
    """`ray start --block` for one node, every port chosen here (see the module docstring)."""
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
        "--temp-dir", str(temp_dir),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--node-manager-port", str(free_port()),
        "--object-manager-port", str(free_port()),
        "--num-gpus", str(int(gpus)),
        "--resources", json.dumps(dict(resources)),
        "--disable-usage-stats",
    ]  # fmt: skip
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    return cmd


def _spawn(cmd: list[str], token: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    with log_path.open("wb") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: we stop exactly what we started
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 (only prctl, no Python locks)
        )


def _stop_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM to `ray start --block` (it stops its Ray processes), then SIGKILL to its group."""
    pgid = process.pid  # start_new_session: the group id is the child's pid
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("Ray (pid %d) did not stop in %.0f s; killing its process group", pgid, timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # leftovers of our own group only
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5.0)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when its parent dies; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig
