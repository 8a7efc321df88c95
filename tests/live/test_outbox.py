from __future__ import annotations

import asyncio

import pytest

from parleyd.live.frames import (
    Audio,
    Close,
    CloseCode,
    Event,
    EventType,
    Role,
    StreamError,
    Text,
)
from parleyd.live.outbox import Outbox
from parleyd.live.replies import Reply


def audio(n: int) -> Audio:
    return Audio(bytes([n % 256]) * 4, 16_000, "p_1", source_sequence=n)


async def test_full_outbox_drops_oldest_audio_and_reports_count() -> None:
    box = Outbox(capacity=4)
    for n in range(10):
        box.put(audio(n))
    assert len(box) == 4
    first = await box.get()
    assert isinstance(first, Event)
    assert (first.type, first.count) == (EventType.FRAMES_DROPPED, 6)
    rest = [await box.get() for _ in range(4)]
    assert [f.source_sequence for f in rest if isinstance(f, Audio)] == [6, 7, 8, 9]
    assert box.dropped_total == 6


async def test_text_is_kept_while_audio_is_dropped() -> None:
    box = Outbox(capacity=3)
    box.put(audio(0))
    box.put(Text("hi", "p_2", Role.USER))
    box.put(audio(1))
    box.put(audio(2))  # full: the oldest audio goes, the text stays
    kinds = []
    while len(box):
        f = await box.get()
        kinds.append(type(f).__name__ if not isinstance(f, Audio) else f"a{f.source_sequence}")
    assert kinds == ["Event", "Text", "a1", "a2"]


async def test_control_frames_always_get_in_and_close_is_last() -> None:
    box = Outbox(capacity=2)
    box.put(Text("a", "p", Role.USER))
    box.put(Text("b", "p", Role.USER))
    box.put(StreamError(3, "bad"))
    box.put(Close(CloseCode.OK, "bye"))
    box.put(Text("after close", "p", Role.USER))
    got = [await box.get() for _ in range(4)]
    assert isinstance(got[-1], Close)
    assert any(isinstance(f, StreamError) for f in got)
    assert len(box) == 0


async def test_get_waits_for_a_frame() -> None:
    box = Outbox(capacity=4)
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.put(audio(5))
    got = await asyncio.wait_for(waiter, 1)
    assert isinstance(got, Audio)


def test_capacity_must_be_sane() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Outbox(capacity=1)


def test_played_text_cuts_timed_deltas_at_the_mark() -> None:
    r = Reply("int_1", audio_ms=1000)
    r.parts = [(0, "one "), (250, "two "), (500, "three "), (750, "four")]
    assert r.played_text(600) == "one two three"
    assert r.played_text(0) == ""
    assert r.played_text(5000) == "one two three four"


def test_played_text_without_timing_is_proportional_on_word_boundaries() -> None:
    r = Reply("int_1", audio_ms=1000)
    r.parts = [(0, "a b c d e f g h i j")]
    assert r.played_text(500) == "a b c d e"
    assert r.played_text(999) == "a b c d e f g h i"
