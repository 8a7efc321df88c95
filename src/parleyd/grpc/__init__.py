"""The gRPC face of parleyd: servicers, interceptors, status mapping and server bootstrap."""
