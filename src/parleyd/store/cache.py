"""A write-through cache of sessions, for a database that only this process writes.

Every session write of the repository reports to the cache when its transaction has ended, and
reads may fill it from the database. Everything runs on the event loop: no locks.

Why it never serves a stale session:
- A committed write puts the version it wrote, unless another write of the same session is still
  in flight or a newer version was already committed by a concurrent one: then the entry is
  evicted instead. (On PostgreSQL two writers may finish in any order; on SQLite they finish in
  commit order.) A failed write evicts: its outcome may be unknown (an interrupted COMMIT).
- A read that fills the cache took its snapshot after `fill_start()`. Its row goes in only if no
  write of that session finished since then and none is in flight; otherwise it may predate one.
- Entries are replaced by a version only if it is not older than the one already there.

Sessions handed out are shared with the cache: treat them as values (replace, never mutate).
"""

from __future__ import annotations

import sys
from collections import OrderedDict

from parleyd.domain.session import Session

# (session, hash of its access token)
Entry = tuple[Session, str]

# What the cache may hold, by the estimate of `entry_size`. A session's text fields may reach
# about 250 KB (situation and its rendering 64 KB each, scene 70 KB, metadata 37 KB; up to 4 bytes
# a character in memory), so a count alone would let 10,000 such sessions take gigabytes. 64 MiB
# keeps at least ~64 of the largest, and the full 10,000 of ordinary ones (a few KB each).
MAX_BYTES = 64 * 1024 * 1024
# Memory of a session beyond its text: the object, ints, enums, container headers, the token hash.
_ENTRY_OVERHEAD = 1_024

_WRITTEN_PRUNE_AT = 4_096
_WRITTEN_HARD_LIMIT = 65_536


def entry_size(entry: Entry) -> int:
    """An estimate of the memory `entry` holds: its text fields (as Python stores them) and a
    fixed overhead. Cheap: sys.getsizeof of a string does not read it."""
    s, token_hash = entry
    size = _ENTRY_OVERHEAD + sys.getsizeof(token_hash)
    for text in (
        s.id,
        s.api_key_id,
        s.agent_id,
        s.user_id,
        s.profile,
        s.avatar_id,
        s.speaker_id,
        s.situation,
        s.rendered_situation,
        s.dynamic_info,
        s.continue_from_session_id,
        s.summary,
    ):
        size += sys.getsizeof(text)
    size += sys.getsizeof(s.scene) + sys.getsizeof(s.metadata)
    for item in s.scene:
        size += 64 + sys.getsizeof(item.name) + sys.getsizeof(item.description)
    for key, value in s.metadata.items():
        size += sys.getsizeof(key) + sys.getsizeof(value)
    return size


class SessionCache:
    def __init__(self, capacity: int = 10_000, max_bytes: int = MAX_BYTES) -> None:
        """At most `capacity` sessions and `max_bytes` of them (by `entry_size`); the least
        recently used go first."""
        if capacity < 1:
            raise ValueError("capacity must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._sizes: dict[str, int] = {}  # session id -> entry_size of its entry
        self._bytes = 0  # their sum
        # session id -> [writes in flight, highest version those writes committed]
        self._inflight: dict[str, list[int]] = {}
        self._seq = 0  # counts finished session writes
        self._fills: dict[int, int] = {}  # fill ticket -> _seq when that read began
        self._written: dict[str, int] = {}  # session id -> _seq of its last write (while fills run)
        self._next_ticket = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The estimated memory of every entry held."""
        return self._bytes

    def get(self, session_id: str) -> Entry | None:
        entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
        return entry

    def peek(self, session_id: str) -> Entry | None:
        """Like get, without touching the LRU order (for tests and diagnostics)."""
        return self._entries.get(session_id)

    # -- writes -------------------------------------------------------------------------------

    def write_started(self, session_id: str) -> None:
        rec = self._inflight.get(session_id)
        if rec is None:
            self._inflight[session_id] = [1, 0]
        else:
            rec[0] += 1

    def write_committed(self, session_id: str, written: Entry | None) -> None:
        """The write's transaction committed; `written` is the row it wrote (None: no change)."""
        rec = self._finish(session_id)
        if written is None:
            return
        self._note(session_id)
        version = written[0].version
        if rec[0] == 0 and version >= rec[1]:
            self._put(written)
        else:
            self._drop(session_id)
        rec[1] = max(rec[1], version)

    def write_failed(self, session_id: str) -> None:
        """The write raised: it rolled back, or (an interrupted COMMIT) nobody knows."""
        self._finish(session_id)
        self._note(session_id)
        self._drop(session_id)

    def _finish(self, session_id: str) -> list[int]:
        rec = self._inflight[session_id]
        rec[0] -= 1
        if rec[0] == 0:
            del self._inflight[session_id]
        return rec

    def _put(self, entry: Entry) -> None:
        sid = entry[0].id
        old = self._entries.get(sid)
        if old is not None and old[0].version > entry[0].version:
            return
        size = entry_size(entry)
        if size > self._max_bytes:  # it would push out everything else: keep no copy at all
            self._drop(sid)
            return
        self._bytes += size - self._sizes.get(sid, 0)
        self._sizes[sid] = size
        self._entries[sid] = entry
        self._entries.move_to_end(sid)
        while len(self._entries) > self._capacity or self._bytes > self._max_bytes:
            oldest, _ = self._entries.popitem(last=False)
            self._bytes -= self._sizes.pop(oldest)

    def _drop(self, session_id: str) -> None:
        if self._entries.pop(session_id, None) is not None:
            self._bytes -= self._sizes.pop(session_id)

    def _note(self, session_id: str) -> None:
        self._seq += 1
        if not self._fills:
            return
        self._written[session_id] = self._seq
        if len(self._written) > _WRITTEN_PRUNE_AT:
            oldest = min(self._fills.values())
            self._written = {k: v for k, v in self._written.items() if v > oldest}
            if len(self._written) > _WRITTEN_HARD_LIMIT:
                # A read that never ends holds the floor down: no fill in flight may go in.
                for ticket in self._fills:
                    self._fills[ticket] = -1
                self._written.clear()

    # -- fills from reads ---------------------------------------------------------------------

    def fill_start(self) -> int:
        """Call before the read is submitted; pass the ticket to fill_end, whatever happens."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._fills[ticket] = self._seq
        return ticket

    def fill_end(self, ticket: int, found: Entry | None) -> None:
        began = self._fills.pop(ticket)
        if found is not None and began >= 0:
            sid = found[0].id
            if sid not in self._inflight and self._written.get(sid, 0) <= began:
                self._put(found)
        if not self._fills:
            self._written.clear()
