"""DrawnAvatar frames (real Pillow drawing and JPEG decoding) and the blink schedule."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from parleyd.engine.avatar import MOUTHS, BlinkSchedule, DrawnAvatar, blink, drawn_avatar
from parleyd.engine.visemes import VISEMES


def decode(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    assert image.size == (320, 240)
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def region_diff(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean absolute difference per pixel and channel inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return float(np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean())


def test_every_viseme_has_a_mouth() -> None:
    assert set(MOUTHS) == set(VISEMES)


def test_frames_are_320x240_jpegs() -> None:
    avatar = DrawnAvatar("shopkeeper-1")
    assert (avatar.width, avatar.height, avatar.fps) == (320, 240, 15)
    for viseme in VISEMES:
        for closed in (False, True):
            frame = avatar.frame(viseme, eyes_closed=closed)
            assert frame[:2] == b"\xff\xd8"  # JPEG SOI
            decode(frame)


def test_open_mouth_differs_from_closed_in_the_mouth_region() -> None:
    avatar = DrawnAvatar("alice")
    closed = decode(avatar.frame("PP", eyes_closed=False))
    wide = decode(avatar.frame("aa", eyes_closed=False))
    box = avatar.mouth_box
    assert region_diff(closed, wide, box) > 20
    # ...and nowhere else: the eyes did not move.
    assert region_diff(closed, wide, avatar.eye_box) < 1.5
    # round and narrow shapes differ from each other too
    oh = decode(avatar.frame("oh", eyes_closed=False))
    ss = decode(avatar.frame("SS", eyes_closed=False))
    assert region_diff(oh, ss, box) > 5


def test_every_mouth_shape_is_distinct() -> None:
    avatar = DrawnAvatar("bob")
    frames = {v: decode(avatar.frame(v, eyes_closed=False)) for v in VISEMES}
    box = avatar.mouth_box
    for i, a in enumerate(VISEMES):
        for b in VISEMES[i + 1 :]:
            assert region_diff(frames[a], frames[b], box) > 0.5, (a, b)


def test_blink_differs_in_the_eye_region() -> None:
    avatar = DrawnAvatar("alice")
    open_eyes = decode(avatar.frame("sil", eyes_closed=False))
    shut = decode(avatar.frame("sil", eyes_closed=True))
    assert region_diff(open_eyes, shut, avatar.eye_box) > 8
    assert region_diff(open_eyes, shut, avatar.mouth_box) < 1.5


def test_avatars_differ_by_id_and_are_stable() -> None:
    ids = ["shopkeeper-1", "tutor", "agent_42", "npc-guard", "alice", "bob"]
    frames = [decode(DrawnAvatar(i).frame("sil", eyes_closed=False)) for i in ids]
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            assert np.abs(frames[i] - frames[j]).mean() > 3, (ids[i], ids[j])
    again = decode(DrawnAvatar("tutor").frame("sil", eyes_closed=False))
    assert np.array_equal(again, frames[1])  # deterministic across instances


def test_frames_are_cached_and_shared() -> None:
    avatar = DrawnAvatar("cache-me")
    first = avatar.frame("aa", eyes_closed=False)
    assert avatar.frame("aa", eyes_closed=False) is first
    assert avatar.frame("not-a-viseme", eyes_closed=False) == avatar.frame("sil", eyes_closed=False)
    assert drawn_avatar("shared") is drawn_avatar("shared")


# JPEG (quality 80) of a flat drawing: about 6-7 KB a frame. The budget keeps a 15 fps stream
# under 2 Mbit/s. Timings of drawing and of cache reads: bench/avatar.py.
FRAME_BYTES_MAX = 16_000


def test_the_thirty_frames_are_distinct_deterministic_and_within_budget() -> None:
    avatar = DrawnAvatar("timing")
    frames = {
        (v, closed): avatar.frame(v, eyes_closed=closed)
        for v in VISEMES
        for closed in (False, True)
    }
    assert len(frames) == 30
    assert len(set(frames.values())) == 30  # every mouth and eye state is a picture of its own
    again = DrawnAvatar("timing")  # a fresh instance draws them again, byte for byte
    for (viseme, closed), jpeg in frames.items():
        assert again.frame(viseme, eyes_closed=closed) == jpeg, (viseme, closed)
        assert avatar.frame(viseme, eyes_closed=closed) is jpeg  # drawn once, then cached
        assert (jpeg[:2], jpeg[-2:]) == (b"\xff\xd8", b"\xff\xd9")  # a whole JPEG: SOI .. EOI
        image = Image.open(io.BytesIO(jpeg))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (320, 240))
        assert len(jpeg) <= FRAME_BYTES_MAX, (viseme, closed, len(jpeg))


def test_other_sizes() -> None:
    avatar = DrawnAvatar("small", width=160, height=120, fps=10)
    image = Image.open(io.BytesIO(avatar.frame("oh", eyes_closed=True)))
    assert image.size == (160, 120)
    x0, y0, x1, y1 = avatar.mouth_box
    assert 0 <= x0 < x1 <= 160
    assert 0 <= y0 < y1 <= 120
    with pytest.raises(ValueError, match="32x32"):
        DrawnAvatar("tiny", width=16, height=16)


@pytest.mark.parametrize("seed", [0, 1, 42, 65535])
def test_blink_schedule(seed: int) -> None:
    fps = 15
    schedule = BlinkSchedule(seed, fps=fps)
    closed = [schedule.eyes_closed(i) for i in range(20 * fps)]
    runs: list[int] = []
    length = 0
    for c in [*closed, False]:
        if c:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    assert 3 <= len(runs) <= 6, runs  # a blink every 3-6 s
    assert max(runs) * 1000 / fps <= 201, runs  # never closed much longer than ~200 ms
    starts = [i for i in range(1, len(closed)) if closed[i] and not closed[i - 1]]
    gaps = [(b - a) / fps for a, b in itertools.pairwise(starts)]
    assert all(2.9 <= g <= 6.1 for g in gaps), gaps
    # deterministic per seed, and any frame can be asked in any order
    assert [BlinkSchedule(seed, fps).eyes_closed(i) for i in reversed(range(20 * fps))] == closed[
        ::-1
    ]
    assert [blink(seed, i) for i in range(20 * fps)] == closed


def test_blink_schedules_differ_by_seed() -> None:
    a = [BlinkSchedule(1).eyes_closed(i) for i in range(600)]
    b = [BlinkSchedule(2).eyes_closed(i) for i in range(600)]
    assert a != b


def test_blink_at_other_rates() -> None:
    schedule = BlinkSchedule(7, fps=30)
    closed = [schedule.eyes_closed(i) for i in range(30 * 20)]
    assert 3 <= sum(1 for i in range(1, len(closed)) if closed[i] and not closed[i - 1]) <= 6
    with pytest.raises(ValueError, match="fps"):
        BlinkSchedule(1, fps=0)
