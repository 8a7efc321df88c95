"""A room's named timers: at most one per name, all cancelled together when the room closes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Timers:
    def __init__(self) -> None:
        self._pending: dict[str, asyncio.TimerHandle | asyncio.Task[None]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._pending

    def call_later(self, name: str, delay_s: float, fn: Callable[[], None]) -> None:
        """Runs `fn` after `delay_s`, replacing a pending timer of the same name."""
        self.cancel(name)

        def fire() -> None:
            self._pending.pop(name, None)
            fn()

        self._pending[name] = asyncio.get_running_loop().call_later(max(0.0, delay_s), fire)

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` as a task (cancelled with the room), replacing one of the same name."""
        self.cancel(name)
        task = asyncio.create_task(work)
        self._pending[name] = task
        task.add_done_callback(lambda t: self._forget(name, t))

    def done(self, name: str) -> None:
        """Forgets `name` without cancelling it (a task calls this when it has done its work)."""
        self._pending.pop(name, None)

    def cancel(self, name: str) -> None:
        timer = self._pending.pop(name, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        for name in list(self._pending):
            self.cancel(name)

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._pending.get(name) is task:
            del self._pending[name]
