"""Background work that repeats until the server stops (expiry sweep, usage heartbeat)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("parleyd")


async def every(
    interval_ms: int, stop: asyncio.Event, work: Callable[[], Awaitable[object]], what: str
) -> None:
    """Runs `work` now and every `interval_ms` until `stop` is set; a failure is logged, and
    the next round tries again (one bad round must not end the loop)."""
    while not stop.is_set():
        try:
            await work()
        except Exception:
            log.exception("%s failed", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_ms / 1000)
