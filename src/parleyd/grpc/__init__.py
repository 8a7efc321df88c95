"""The gRPC face of parleyd: the SessionService servicer, the Interact adapter, API-key and
call-log wrappers, status mapping, and the server the composition root (`parleyd.app`) starts."""

from parleyd.grpc.server import GrpcServer

__all__ = ["GrpcServer"]
