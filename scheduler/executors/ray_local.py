"""The embedded Ray cluster: one local Ray head that stands in for every catalog site.

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
Ray processes it started.
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
STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


def site_resource(site: str) -> str:
    """The custom Ray resource that stands for a site's GPUs: `site:<name>`."""
    return f"site:{site}"


def free_port() -> int:
    """A TCP port nobody listens on right now (the usual bind-to-0 probe; racy but short-lived)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRayError(RuntimeError):
    """The embedded Ray cluster did not come up."""


class LocalRayCluster:
    """A single-node Ray head owned by this process. Build with `start`; `close` stops it."""

    def __init__(
        self, process: subprocess.Popen[bytes], address: str, token: str, temp_dir: Path, log_path: Path
    ) -> None:
        self.process = process
        self.address = address  # the dashboard (Job Submission API) URL, http://127.0.0.1:<port>
        self.token = token
        self.temp_dir = temp_dir
        self.log_path = log_path
        self._closed = False

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
    ) -> LocalRayCluster:
        """Start the head with `gpus` logical GPUs and the given custom resources; wait until the
        Job Submission API answers. Raises LocalRayError (with the end of Ray's output) on failure."""
        temp_dir = Path(tempfile.mkdtemp(prefix="gravity-ray-"))
        log_path = temp_dir / "ray-start.log"
        token = secrets.token_hex(32)
        dashboard_port = free_port()
        cmd = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            "--temp-dir", str(temp_dir),
            "--port", str(free_port()),
            "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port),
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
            "--node-manager-port", str(free_port()),
            "--object-manager-port", str(free_port()),
            "--num-gpus", str(int(gpus)),
            "--resources", json.dumps(dict(resources)),
            "--disable-usage-stats",
        ]  # fmt: skip
        if num_cpus is not None:
            cmd += ["--num-cpus", str(num_cpus)]
        env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: we stop exactly what we started
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 (only prctl, no Python locks)
            )
        cluster = cls(process, f"http://127.0.0.1:{dashboard_port}", token, temp_dir, log_path)
        atexit.register(cluster.close)
        try:
            cluster._wait_ready(ready_timeout_s)
        except BaseException:
            cluster.close()
            raise
        log.info("embedded Ray started at %s (pid %d, %d logical GPUs)", cluster.address, process.pid, gpus)
        return cluster

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
        pgid = self.process.pid  # start_new_session: the group id is the child's pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("embedded Ray did not stop in %.0f s; killing its process group", timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # leftovers of our own group only
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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
