"""Checks of what a participant sends: each returns the StreamError to answer, or None if fine.

A refused frame changes nothing; the stream goes on. The numbers are the documented limits of
`domain.limits`, which the proto comments quote.
"""

from __future__ import annotations

import re

from parleyd.domain import limits
from parleyd.domain.errors import ErrorKind
from parleyd.live.frames import StreamError
from parleyd.live.participant import Participant

_TRIGGER_NAME = re.compile(rf"[a-z][a-z0-9_.:-]{{0,{limits.TRIGGER_NAME_MAX_CHARS - 1}}}")


def invalid(message: str, field: str = "") -> StreamError:
    return StreamError(ErrorKind.INVALID_ARGUMENT, message, field)


def refused(message: str, field: str = "") -> StreamError:
    return StreamError(ErrorKind.FAILED_PRECONDITION, message, field)


def pcm(p: Participant, data: bytes, field: str, rate: int = 0) -> StreamError | None:
    """PCM16: whole samples, and no longer than the chunk length `p` declared (at most 1 s)."""
    if len(data) % 2:
        return invalid("PCM16 audio must have an even number of bytes", field)
    rate = rate or p.sample_rate
    chunk_ms = min(p.chunk_ms, limits.AUDIO_CHUNK_HARD_MAX_MS)
    limit = rate * chunk_ms // 1000 * 2
    if len(data) > limit:
        return invalid(
            f"chunk of {len(data)} bytes is longer than the declared {chunk_ms} ms "
            f"({limit} bytes at {rate} Hz)",
            field,
        )
    return None


def text(value: str, field: str) -> StreamError | None:
    if not value.strip():
        return invalid("text must not be empty", field)
    if len(value) > limits.TEXT_MAX_CHARS:
        return invalid(
            f"text is {len(value)} characters; the limit is {limits.TEXT_MAX_CHARS}", field
        )
    return None


def trigger(name: str, payload_bytes: int) -> StreamError | None:
    if not _TRIGGER_NAME.fullmatch(name):
        return invalid(
            "trigger name must be lowercase letters, digits and _.:- starting with a letter, "
            f"at most {limits.TRIGGER_NAME_MAX_CHARS} characters",
            "trigger.name",
        )
    if payload_bytes > limits.TRIGGER_PAYLOAD_MAX_BYTES:
        return invalid(
            f"payload is {payload_bytes} bytes; the limit is {limits.TRIGGER_PAYLOAD_MAX_BYTES}",
            "trigger.payload",
        )
    return None


def interaction_id(value: str, field: str) -> StreamError | None:
    if len(value) > limits.INTERACTION_ID_MAX_CHARS:
        return invalid(
            f"interaction_id is longer than {limits.INTERACTION_ID_MAX_CHARS} characters", field
        )
    return None
