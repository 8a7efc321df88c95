"""Background work that repeats until the server stops (expiry sweep, usage heartbeat).

A round that fails because the database is out of reach (an error whose `kind` is UNAVAILABLE:
`domain.errors.Unavailable`, recognised by its kind because this module imports nothing from
parleyd) is not a bug: a streak of them is one WARNING line when it starts and one INFO line when
a round works again, never a traceback per round. Any other failure is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("parleyd")

UNAVAILABLE = "UNAVAILABLE"


async def every(
    interval_ms: int, stop: asyncio.Event, work: Callable[[], Awaitable[object]], what: str
) -> None:
    """Runs `work` now and every `interval_ms` until `stop` is set; a failure is logged, and
    the next round tries again (one bad round must not end the loop)."""
    outage = False
    while not stop.is_set():
        try:
            await work()
        except Exception as exc:
            if not _unavailable(exc):
                log.exception("%s failed", what)
            elif not outage:
                outage = True
                log.warning(
                    "%s failed: %s (retrying every %d ms, logged again once it works)",
                    what,
                    exc,
                    interval_ms,
                )
        else:
            if outage:
                outage = False
                log.info("%s works again", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_ms / 1000)


def _unavailable(exc: BaseException) -> bool:
    return getattr(exc, "kind", None) == UNAVAILABLE
