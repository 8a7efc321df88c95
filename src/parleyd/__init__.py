"""parleyd: a self-hostable gRPC service for live conversations between people and AI characters."""

__version__ = "0.1.0"
