"""Where budget alerts go: the log always, and a webhook (HTTP POST of JSON) when configured.

An alert reaches the sink only after the store recorded it as new (once per budget, period and
threshold, across restarts and replicas). Webhook delivery runs on a background thread with
retries and backoff, so a slow receiver never stalls the scheduling cycle; delivery is at most
once (a crash between recording and posting loses that POST; the alert stays in the store and
on the WatchAlerts stream).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from scheduler.finops.model import BudgetAlert

log = logging.getLogger("gravity.finops.alerts")

_STOP = object()


def alert_to_json(a: BudgetAlert) -> dict[str, Any]:
    """The webhook payload (also what `gravity budget watch --json` prints)."""
    tag, _, value = a.budget_id.partition("=")
    return {
        "kind": "gravity.budget_alert",
        "seq": a.seq,
        "budget": a.budget_id,
        "tag": tag,
        "value": value,
        "period": a.period,
        "threshold": a.threshold,
        "amount_usd": round(a.amount_usd, 2),
        "spend_usd": round(a.spend_usd, 2),
        "accrued_usd": round(a.accrued_usd, 2),
        "committed_usd": round(a.committed_usd, 2),
        "on_breach": str(a.on_breach),
        "at": datetime.fromtimestamp(a.at, UTC).isoformat(),
        "message": a.message,
    }


class AlertSink:
    def __init__(self, webhook_url: str = "", *, timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 0.5):
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        if webhook_url:
            if not webhook_url.startswith(("http://", "https://")):
                raise ValueError(f"finops.alert_webhook_url: expected an http(s) URL, got {webhook_url!r}")
            self._thread = threading.Thread(target=self._run, name="gravity-alert-webhook", daemon=True)
            self._thread.start()

    def send(self, alert: BudgetAlert) -> None:
        log.warning("budget alert: %s", alert.message)
        if self._thread is not None:
            self._queue.put(alert)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued alert was posted or given up on; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self.flush(timeout_s)
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, BudgetAlert)
                self._post(item)
            finally:
                self._queue.task_done()

    def _post(self, alert: BudgetAlert) -> None:
        body = json.dumps(alert_to_json(alert)).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    if 200 <= reply.status < 300:
                        self.delivered += 1
                        return
                    problem = f"HTTP {reply.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                problem = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        self.failed += 1
        log.error("budget alert %s not delivered to %s: %s", alert.key, self.webhook_url, problem)
