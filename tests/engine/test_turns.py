"""VadTurnDetector on real speech (espeak-ng), padded with silence; positions come from sample
counts, never from wall time."""

from __future__ import annotations

import numpy as np
import pytest

from parleyd.engine.interfaces import TurnEvent
from parleyd.engine.turns import FRAME_MS, VadTurnDetector

from .speech import ms_to_bytes, say, silence, trim, voiced_span

STARTED, STOPPED = TurnEvent.SPEECH_STARTED, TurnEvent.SPEECH_STOPPED
RATE = 16_000


def run(
    detector: VadTurnDetector, pcm: bytes, chunk_ms: float = 20
) -> list[tuple[TurnEvent, float]]:
    """Feeds `pcm` in chunks; each event with the audio fed so far (ms) when it came out."""
    step = ms_to_bytes(chunk_ms)
    out: list[tuple[TurnEvent, float]] = []
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        for event in detector.feed(chunk):
            out.append((event, (i + len(chunk)) / 32))
    return out


def speech_end_ms(lead_ms: int, speech: bytes) -> float:
    return lead_ms + voiced_span(speech)[1] / (RATE / 1000)


def speech_start_ms(lead_ms: int, speech: bytes) -> float:
    return lead_ms + voiced_span(speech)[0] / (RATE / 1000)


@pytest.mark.parametrize("silence_ms", [300, 600])
def test_one_utterance_is_one_turn_and_stops_after_the_silence(silence_ms: int) -> None:
    speech = say("what is the refund policy")
    pcm = silence(400) + speech + silence(silence_ms + 500)
    det = VadTurnDetector(silence_ms=silence_ms)
    events = run(det, pcm)
    assert [e for e, _ in events] == [STARTED, STOPPED]

    (_, started_at), (_, stopped_at) = events
    begin, end = speech_start_ms(400, speech), speech_end_ms(400, speech)
    # Started once min_speech_ms of it was heard (give or take a frame), not before.
    assert begin + det.min_speech_ms - FRAME_MS <= started_at <= begin + det.min_speech_ms + 60
    # Stopped silence_ms after the speech ended, within a frame (plus webrtcvad's edge).
    assert end + silence_ms - FRAME_MS <= stopped_at <= end + silence_ms + 2 * FRAME_MS
    assert not det.speaking
    assert det.turn_start_ms is not None
    assert det.turn_end_ms is not None
    assert abs(det.turn_start_ms - begin) <= 2 * FRAME_MS
    assert abs(det.turn_end_ms - end) <= 2 * FRAME_MS
    # Voiced audio of the turn: most of the utterance (words have short gaps).
    spoken = end - begin
    assert 0.6 * spoken <= det.speech_ms <= spoken + 2 * FRAME_MS


def test_speaking_and_speech_ms_follow_the_turn() -> None:
    speech = trim(say("how much is the sword"))
    det = VadTurnDetector()
    assert run(det, silence(300)) == []
    assert not det.speaking
    assert det.speech_ms == 0
    half = len(speech) // 2 // 2 * 2
    events = run(det, speech[:half])
    assert [e for e, _ in events] == [STARTED]
    assert det.speaking
    first = det.speech_ms
    assert first >= det.min_speech_ms
    run(det, speech[half:])
    assert det.speaking
    assert det.speech_ms > first
    assert [e for e, _ in run(det, silence(600))] == [STOPPED]
    assert not det.speaking


def test_silence_alone_gives_nothing() -> None:
    det = VadTurnDetector()
    assert run(det, silence(5000)) == []
    assert not det.speaking
    assert det.turn_start_ms is None
    assert det.stream_ms == 5000


@pytest.mark.parametrize("click_ms", [5, 10, 40])
def test_a_click_gives_nothing(click_ms: int) -> None:
    rng = np.random.default_rng(7)
    click = (rng.uniform(-1, 1, RATE * click_ms // 1000) * 20000).astype("<i2").tobytes()
    det = VadTurnDetector()
    assert run(det, silence(500) + click + silence(1000)) == []
    assert not det.speaking


def test_a_short_tone_gives_nothing() -> None:
    t = np.arange(RATE * 80 // 1000)
    tone = (np.sin(2 * np.pi * 440 * t / RATE) * 10000).astype("<i2").tobytes()
    assert run(VadTurnDetector(), silence(300) + tone + silence(1000)) == []


def test_two_utterances_600_ms_apart_are_two_turns() -> None:
    a, b = trim(say("hello who are you")), trim(say("how much is the sword"))
    pcm = silence(300) + a + silence(600) + b + silence(800)  # 600 ms between the words
    events = run(VadTurnDetector(), pcm)
    assert [e for e, _ in events] == [STARTED, STOPPED, STARTED, STOPPED]
    first_stop, second_start = events[1][1], events[2][1]
    a_end = 300 + len(a) / 32
    assert a_end + 300 - FRAME_MS <= first_stop <= a_end + 300 + 2 * FRAME_MS
    assert second_start >= a_end + 600


def test_pauses_shorter_than_the_silence_keep_one_turn() -> None:
    a, b = trim(say("hello")), trim(say("who are you"))
    pcm = silence(300) + a + silence(200) + b + silence(800)
    assert [e for e, _ in run(VadTurnDetector(silence_ms=400), pcm)] == [STARTED, STOPPED]


def test_chunk_sizes_do_not_change_the_events() -> None:
    a, b = say("where is the blacksmith"), say("can i get a refund", voice="en-gb-x-rp")
    pcm = silence(250) + a + silence(700) + b + silence(900)
    seen = []
    for chunk_ms in (10, 20, 37):
        det = VadTurnDetector()
        trace = []
        step = ms_to_bytes(chunk_ms)
        for i in range(0, len(pcm), step):
            for event in det.feed(pcm[i : i + step]):
                trace.append((event, det.turn_start_ms, det.turn_end_ms))
        seen.append(trace)
    assert [e for e, _, _ in seen[0]] == [STARTED, STOPPED, STARTED, STOPPED]
    assert seen[0] == seen[1] == seen[2]


def test_odd_sized_chunks_are_buffered() -> None:
    speech = silence(200) + say("hello who are you") + silence(600)
    det = VadTurnDetector()
    events = []
    for i in range(0, len(speech), 333):  # odd byte counts: samples split across chunks
        events += det.feed(speech[i : i + 333])
    assert events == [STARTED, STOPPED]


def test_end_of_turn_forces_the_stop() -> None:
    speech = say("what is the refund policy")
    det = VadTurnDetector()
    events = run(det, silence(200) + speech[: len(speech) // 2 // 2 * 2])
    assert [e for e, _ in events] == [STARTED]
    assert det.end_of_turn() == [STOPPED]
    assert not det.speaking
    assert det.turn_end_ms is not None
    assert det.end_of_turn() == []  # nothing under way


def test_end_of_turn_during_an_onset_drops_it() -> None:
    speech = say("what is the refund policy")
    det = VadTurnDetector(min_speech_ms=200)
    run(det, silence(200) + speech[: ms_to_bytes(110)])  # voiced, not yet long enough
    assert det.end_of_turn() == []
    assert not det.speaking


def test_reset_forgets_a_turn_under_way() -> None:
    speech = say("how much is the long sword")
    det = VadTurnDetector()
    assert [e for e, _ in run(det, silence(200) + speech[: ms_to_bytes(600)])] == [STARTED]
    det.reset()
    assert not det.speaking
    assert det.stream_ms == 0
    assert det.turn_start_ms is None
    assert run(det, silence(2000)) == []  # no stop for a turn it no longer knows
    assert [e for e, _ in run(det, speech + silence(600))] == [STARTED, STOPPED]


def test_min_speech_ms_sets_how_long_speech_must_last() -> None:
    speech = say("hello who are you")
    begin = speech_start_ms(300, speech)
    for min_ms in (60, 200):
        events = run(VadTurnDetector(min_speech_ms=min_ms), silence(300) + speech + silence(600))
        assert events[0][0] is STARTED
        assert begin + min_ms - FRAME_MS <= events[0][1] <= begin + min_ms + 80


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        VadTurnDetector(aggressiveness=4)
    with pytest.raises(ValueError, match="silence_ms"):
        VadTurnDetector(silence_ms=0)


@pytest.mark.parametrize("chunk_ms", [10, 20, 37])
def test_held_speech_is_the_turn_so_far_with_a_preroll(chunk_ms: int) -> None:
    pcm = silence(700) + say("what is the refund policy") + silence(600)
    det = VadTurnDetector(preroll_ms=200)
    step = ms_to_bytes(chunk_ms)
    fed = 0
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        fed += len(chunk)
        if TurnEvent.SPEECH_STARTED in det.feed(chunk):
            break
    assert det.speaking
    assert det.turn_start_ms is not None
    begin = ms_to_bytes(det.turn_start_ms - 200)
    assert det.held_speech == pcm[begin:fed]
    # The recognizer gets held_speech, then everything after it: the whole utterance.
    assert det.held_speech + pcm[fed:] == pcm[begin:]


def test_held_speech_keeps_the_start_of_a_long_stream() -> None:
    det = VadTurnDetector(preroll_ms=300)
    assert run(det, silence(20_000)) == []  # old audio is let go...
    speech = say("hello who are you")
    assert det.feed(speech[: ms_to_bytes(400)]) == [STARTED]  # one chunk: all of it is held
    assert det.turn_start_ms is not None
    assert det.turn_start_ms >= 20_000
    # ...but not the pre-roll before the turn.
    expected = silence(20_000)[ms_to_bytes(det.turn_start_ms - 300) :] + speech[: ms_to_bytes(400)]
    assert det.held_speech == expected
