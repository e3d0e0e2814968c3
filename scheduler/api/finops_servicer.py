"""gravity.v1.FinOps over gRPC: cost reports, budgets, alerts, the audit trail."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from gravity.v1 import finops_pb2 as fpb
from gravity.v1 import finops_pb2_grpc as fpb_grpc
from scheduler.api import finops_convert as fc
from scheduler.api.convert import from_ts
from scheduler.api.servicer import MAX_PAGE, WATCH_POLL_S, Abort, _errors, _invalid, _peer_name, _watch_errors
from scheduler.finops.budgets import BudgetStatus
from scheduler.finops.model import AuditKind, AuditQuery, Budget, InvalidBudget, VersionMismatch
from scheduler.finops.periods import InvalidPeriod, parse_period
from scheduler.service import SchedulerService

T = TypeVar("T")

DEFAULT_GROUP_BY = ("cost_center",)


def _finops_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """FinOps domain errors as gRPC statuses (on top of the Scheduler servicer's mapping)."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> T:
        try:
            return fn(self, request, context)
        except InvalidBudget as exc:
            raise _invalid(f"budget.{exc.field}", exc.message) from None
        except InvalidPeriod as exc:
            raise _invalid("period", str(exc)) from None
        except VersionMismatch as exc:
            if exc.actual == 0:
                raise Abort(grpc.StatusCode.NOT_FOUND, str(exc)) from None
            if exc.expected == 0:
                raise Abort(grpc.StatusCode.ALREADY_EXISTS, str(exc)) from None
            raise Abort(grpc.StatusCode.ABORTED, str(exc)) from None

    return _errors(wrapper)


def _tag_filters(tags: Any, field: str) -> dict[str, str]:
    out = {}
    for i, t in enumerate(tags):
        key, sep, value = t.partition("=")
        if not sep or not key:
            raise _invalid(f"{field}[{i}]", f"expected key=value, got {t!r}")
        out[key] = value
    return out


class FinOpsServicer(fpb_grpc.FinOpsServicer):
    def __init__(self, service: SchedulerService) -> None:
        self.service = service
        self.governance = service.governance

    # ------------------------------------------------------------------ report

    @_finops_errors
    def CostReport(self, request: fpb.CostReportRequest, context: grpc.ServicerContext) -> fpb.CostReportResponse:
        by = tuple(request.by) or DEFAULT_GROUP_BY
        for i, key in enumerate(by):
            if not key or "=" in key:
                raise _invalid(f"by[{i}]", f"expected a tag key, got {key!r}")
        now = self.service.clock.now()
        period = parse_period(request.period, now)
        where = _tag_filters(request.tags, "tags")
        return fc.showback_to_proto(self.governance.report(by, period, where, now))

    # ------------------------------------------------------------------ budgets

    def _status(self, budget: Budget) -> fpb.BudgetStatus:
        (status,) = self.governance.statuses(self.service.clock.now(), [budget])
        return self._status_proto(status)

    def _status_proto(self, s: BudgetStatus) -> fpb.BudgetStatus:
        fired = [a.threshold for a in self.service.store.alerts(0, budget_id=s.budget.id, period=s.period.label)]
        return fc.status_to_proto(s, fired)

    def _budget(self, request: Any) -> Budget:
        if not request.HasField("budget"):
            raise _invalid("budget", "required")
        return fc.budget_from_proto(request.budget, self.governance.settings.default_thresholds)

    @_finops_errors
    def CreateBudget(self, request: fpb.CreateBudgetRequest, context: grpc.ServicerContext) -> fpb.BudgetStatus:
        budget = self._budget(request)
        stored = self.governance.create_budget(budget, request.requested_by or _peer_name(context))
        self.service.retry_waiting()
        return self._status(stored)

    @_finops_errors
    def UpdateBudget(self, request: fpb.UpdateBudgetRequest, context: grpc.ServicerContext) -> fpb.BudgetStatus:
        budget = self._budget(request)
        if request.expected_version < 0:
            raise _invalid("expected_version", "must be >= 0")
        stored = self.governance.update_budget(
            budget, request.expected_version, request.requested_by or _peer_name(context)
        )
        self.service.retry_waiting()  # a raise may release held jobs; a cut changes what may be placed
        return self._status(stored)

    @_finops_errors
    def GetBudget(self, request: fpb.GetBudgetRequest, context: grpc.ServicerContext) -> fpb.BudgetStatus:
        if not request.id:
            raise _invalid("id", "required ('<tag>=<value>')")
        budget = self.service.store.get_budget(request.id)
        if budget is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"no budget {request.id!r}")
        return self._status(budget)

    @_finops_errors
    def ListBudgets(self, request: fpb.ListBudgetsRequest, context: grpc.ServicerContext) -> fpb.ListBudgetsResponse:
        statuses = self.governance.statuses(self.service.clock.now())
        return fpb.ListBudgetsResponse(budgets=[self._status_proto(s) for s in statuses])

    @_finops_errors
    def DeleteBudget(self, request: fpb.DeleteBudgetRequest, context: grpc.ServicerContext) -> fpb.Budget:
        if not request.id:
            raise _invalid("id", "required ('<tag>=<value>')")
        if request.expected_version < 0:
            raise _invalid("expected_version", "must be >= 0")
        removed = self.governance.delete_budget(
            request.id, request.expected_version, request.requested_by or _peer_name(context)
        )
        self.service.retry_waiting()
        return fc.budget_to_proto(removed)

    @_watch_errors
    def WatchAlerts(self, request: fpb.WatchAlertsRequest, context: grpc.ServicerContext) -> Iterator[fpb.BudgetAlert]:
        store = self.service.store
        after = request.after_seq
        if not after and not request.from_start:
            after = store.last_alert_seq()
        while context.is_active():
            for alert in store.alerts(after, timeout_s=WATCH_POLL_S, budget_id=request.budget_id):
                after = max(after, alert.seq)
                yield fc.alert_to_proto(alert)

    # ------------------------------------------------------------------ audit

    @_finops_errors
    def QueryAudit(self, request: fpb.QueryAuditRequest, context: grpc.ServicerContext) -> fpb.QueryAuditResponse:
        kinds = set()
        known = {k.value for k in AuditKind}
        for i, k in enumerate(request.kinds):
            if k not in known:
                raise _invalid(f"kinds[{i}]", f"unknown kind {k!r} (known: {', '.join(sorted(known))})")
            kinds.add(AuditKind(k))
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            raise _invalid("page_size", f"must be within 0..{MAX_PAGE}")
        if request.page_token and not request.page_token.isdigit():
            raise _invalid("page_token", "not a token this server issued")
        since = from_ts(request.since) if request.HasField("since") else None
        until = from_ts(request.until) if request.HasField("until") else None
        if since is not None and until is not None and until <= since:
            raise _invalid("until", "must be after since")
        limit = request.page_size or 100
        entries = self.governance.audit_trail(
            AuditQuery(
                job_id=request.job_id,
                tags=_tag_filters(request.tags, "tags"),
                kinds=frozenset(kinds),
                since=since,
                until=until,
                after_seq=int(request.page_token or 0),
                limit=limit,
            )
        )
        token = str(entries[-1].seq) if len(entries) == limit else ""
        return fpb.QueryAuditResponse(entries=[fc.audit_to_proto(e) for e in entries], next_page_token=token)
