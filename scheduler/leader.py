"""Leader election for replicas: a lease in the store, renewed in the background, with an epoch.

Every replica runs a `Leader`; the one whose lease is live leads (plans and launches), the others
follow (serve reads, accept submissions). The lease lives `ttl_s` in the store; the leader renews
it every `ttl_s / 3` and followers try to take it every `ttl_s / 10`. Locally a replica counts
itself leader only until `LOCAL_SHARE` of the ttl after it *sent* its last successful renewal, so
it stops acting before the store lets the lease go: a replica paused (SIGSTOP, GC, a VM
migration) past its lease wakes up as a follower.

Timing alone is not trusted, though: the epoch (fencing token) travels on every plan and launch
claim, and the store refuses one from an older epoch (scheduler/store/base.py). Failover takes at
most the lease TTL (the old lease expiring) plus ttl/10 (the follower's next try) and one cycle.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from scheduler.store.base import Store, StoreError

log = logging.getLogger("gravity.leader")

LOCAL_SHARE = 0.8  # of the ttl: how long after sending a renewal this replica still acts as leader


def new_holder_id() -> str:
    """Unique per process start: a restarted scheduler is a new holder with a new epoch."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Leader:
    def __init__(self, store: Store, ttl_s: float, holder: str | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("lease ttl_s must be > 0")
        self.store = store
        self.ttl_s = ttl_s
        self.holder = holder or new_holder_id()
        self._epoch = 0
        self._valid_until = 0.0  # time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failing = False

    def epoch(self) -> int:
        """The epoch this replica leads at, or 0 while it follows (or its lease may have lapsed)."""
        with self._lock:
            return self._epoch if time.monotonic() < self._valid_until else 0

    def is_leader(self) -> bool:
        return self.epoch() > 0

    def renew(self) -> int:
        """One attempt to take or keep the lease; the epoch now held (0: following)."""
        sent = time.monotonic()
        try:
            epoch = self.store.acquire_lease(self.holder, self.ttl_s)
        except StoreError as exc:
            if not self._failing:  # once per outage, not every renewal
                log.warning("leader lease not renewed: %s", exc)
            self._failing = True
            return self.epoch()  # what we hold lapses on its own
        self._failing = False
        with self._lock:
            before = self._epoch if time.monotonic() < self._valid_until else 0
            self._epoch = epoch
            self._valid_until = sent + self.ttl_s * LOCAL_SHARE if epoch else 0.0
        if epoch != before:
            if epoch:
                log.info("leader at epoch %d (%s)", epoch, self.holder)
            else:
                log.info("following: another replica holds the leader lease")
        return epoch

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.renew()
        self._thread = threading.Thread(target=self._loop, name="gravity-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and hand the lease back, so a follower takes over without waiting out the ttl."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.ttl_s)
            self._thread = None
        with self._lock:
            held, self._epoch, self._valid_until = self._epoch, 0, 0.0
        if held:
            try:
                self.store.release_lease(self.holder)
            except StoreError as exc:
                log.warning("leader lease not released (it expires in at most %.1f s): %s", self.ttl_s, exc)

    def _loop(self) -> None:
        # The leader renews every ttl/3; a follower asks every ttl/10, so it takes over within
        # ttl/10 of the old lease running out.
        while not self._stop.wait(self.ttl_s / 3 if self.is_leader() else self.ttl_s / 10):
            self.renew()
