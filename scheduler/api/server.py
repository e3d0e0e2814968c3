"""The gRPC server: the Scheduler service, grpc.health.v1 and server reflection (grpcurl works)."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gravity.v1 import finops_pb2 as fpb
from gravity.v1 import finops_pb2_grpc as fpb_grpc
from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from scheduler.api.finops_servicer import FinOpsServicer
from scheduler.api.servicer import SchedulerServicer
from scheduler.service import SchedulerService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Scheduler"].full_name
FINOPS_SERVICE_NAME = fpb.DESCRIPTOR.services_by_name["FinOps"].full_name
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class Server:
    """A started gRPC server; `port` is the bound port (useful with port 0 in tests)."""

    def __init__(self, service: SchedulerService, address: str, max_workers: int = 64) -> None:
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        pb_grpc.add_SchedulerServicer_to_server(SchedulerServicer(service), self.grpc)
        fpb_grpc.add_FinOpsServicer_to_server(FinOpsServicer(service), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                FINOPS_SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.grpc,
        )
        self.port = self.grpc.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")

    def start(self) -> None:
        self.grpc.start()
        for name in ("", SERVICE_NAME, FINOPS_SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_s: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace_s).wait()

    def wait(self) -> None:
        self.grpc.wait_for_termination()
