"""gravity.v1.Scheduler over gRPC: decode, call the service, encode; map errors to status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from scheduler.admission import InvalidSpec
from scheduler.api import convert
from scheduler.service import Conflict, NotFound, SchedulerService
from scheduler.store.base import JobQuery, SchemaError, StoreError

log = logging.getLogger("gravity.api")

MAX_PAGE = 1000
MAX_BATCH = 50_000
WATCH_POLL_S = 1.0

T = TypeVar("T")


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(field: str, message: str) -> Abort:
    return Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}")


def _errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn domain errors into gRPC statuses; anything unexpected is INTERNAL and logged."""

    @functools.wraps(fn)
    def wrapper(self: SchedulerServicer, request: Any, context: grpc.ServicerContext) -> T:
        try:
            return fn(self, request, context)
        except Abort as exc:
            context.abort(exc.code, exc.message)
        except InvalidSpec as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except Conflict as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"state store unavailable, retry: {exc}")
        except SchemaError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("unreachable")  # context.abort raises

    return wrapper


def _watch_errors(fn: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    @functools.wraps(fn)
    def wrapper(self: SchedulerServicer, request: Any, context: grpc.ServicerContext) -> Iterator[T]:
        try:
            yield from fn(self, request, context)
        except Abort as exc:
            context.abort(exc.code, exc.message)
        except NotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"state store unavailable, retry: {exc}")

    return wrapper


class SchedulerServicer(pb_grpc.SchedulerServicer):
    def __init__(self, service: SchedulerService) -> None:
        self.service = service

    @_errors
    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.SubmitJobResponse:
        if not request.HasField("spec"):
            raise _invalid("spec", "required")
        with self.service.turn:  # decode, queue and answer between two cycles (SchedulerService.turn)
            try:
                spec = convert.spec_from_proto(request.spec)
                ((job, created),) = self.service.submit([spec])
            except InvalidSpec as exc:
                raise exc.under("spec") from None
            echo = request.spec if created else None
            return pb.SubmitJobResponse(job=convert.job_to_proto(job, echo), created=created)

    @_errors
    def SubmitJobs(self, request: pb.SubmitJobsRequest, context: grpc.ServicerContext) -> pb.SubmitJobsResponse:
        if not request.specs:
            raise _invalid("specs", "at least one spec is required")
        if len(request.specs) > MAX_BATCH:
            raise _invalid("specs", f"at most {MAX_BATCH} specs per call")
        with self.service.turn:  # decode, queue and answer between two cycles (SchedulerService.turn)
            specs = []
            for i, m in enumerate(request.specs):
                try:
                    specs.append(convert.spec_from_proto(m))
                except InvalidSpec as exc:
                    raise exc.under(f"specs[{i}]") from None
            results = self.service.submit(specs)
            return pb.SubmitJobsResponse(
                results=[
                    pb.SubmitJobResponse(job=convert.job_to_proto(j, m if c else None), created=c)
                    for (j, c), m in zip(results, request.specs, strict=True)
                ]
            )

    @_errors
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        if not request.id:
            raise _invalid("id", "required")
        return convert.job_to_proto(self.service.get(request.id))

    @_errors
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        states = set()
        for i, s in enumerate(request.states):
            if s not in convert.STATE_FROM_PB:
                raise _invalid(f"states[{i}]", "unknown job state")
            states.add(convert.STATE_FROM_PB[s])
        tags = {}
        for i, t in enumerate(request.tags):
            key, sep, value = t.partition("=")
            if not sep or not key:
                raise _invalid(f"tags[{i}]", f"expected key=value, got {t!r}")
            tags[key] = value
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            raise _invalid("page_size", f"must be within 0..{MAX_PAGE}")
        if request.page_token and not request.page_token.isdigit():
            raise _invalid("page_token", "not a token this server issued")
        if request.site and request.site not in self.service.catalog.site_index:
            raise _invalid("site", f"unknown site {request.site!r}")
        jobs, token = self.service.list_jobs(
            JobQuery(
                states=frozenset(states),
                site=request.site,
                tags=tags,
                page_size=request.page_size or 100,
                page_token=request.page_token,
            )
        )
        return pb.ListJobsResponse(jobs=[convert.job_to_proto(j) for j in jobs], next_page_token=token)

    @_errors
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        if not request.id:
            raise _invalid("id", "required")
        by = request.requested_by or _peer_name(context)
        return convert.job_to_proto(self.service.cancel(request.id, by=by, reason=request.reason))

    @_watch_errors
    def WatchJobs(self, request: pb.WatchJobsRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        if request.job_id:
            self.service.get(request.job_id)  # NOT_FOUND for an unknown job
        after = request.after_seq
        if not after and not request.from_start:
            after = self.service.store.last_seq()
        while context.is_active():
            for event in self.service.events(after, request.job_id, timeout_s=WATCH_POLL_S):
                after = event.seq
                yield convert.event_to_proto(event)

    @_errors
    def ExplainPlacement(
        self, request: pb.ExplainPlacementRequest, context: grpc.ServicerContext
    ) -> pb.ExplainPlacementResponse:
        which = request.WhichOneof("target")
        if which == "job_id":
            job, explanation = self.service.explain_job(request.job_id)
            return convert.explanation_to_proto(explanation, job.id)
        if which == "spec":
            try:
                explanation = self.service.explain_spec(convert.spec_from_proto(request.spec))
            except InvalidSpec as exc:
                raise exc.under("spec") from None
            return convert.explanation_to_proto(explanation)
        raise _invalid("target", "set job_id or spec")

    @_errors
    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> pb.ListSitesResponse:
        return pb.ListSitesResponse(sites=[convert.site_to_proto(v) for v in self.service.sites()])


def _peer_name(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-gravity-user":
            return str(value)
    return context.peer()
