"""The one bounded poll of the tests: wait for a condition, or fail saying what did not happen."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Check = Callable[[], bool | Awaitable[bool]]


async def wait_until(
    check: Check,
    *,
    timeout_s: float,
    interval_s: float = 0.02,
    what: str | Callable[[], str] = "condition",
) -> None:
    """Polls `check` (a plain or async function) until it returns true.

    Fails with an AssertionError naming `what` (a text, or a function that says what was seen)
    when `timeout_s` passes first. The check always runs at least once, and once more at the
    deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        left = deadline - loop.time()
        if left <= 0:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout_s:g}s: {said}")
        await asyncio.sleep(min(interval_s, left))
