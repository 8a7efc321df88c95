"""Turn taking from voice activity: webrtcvad on 20 ms frames of 16 kHz PCM.

A turn starts once speech has lasted `min_speech_ms` (short gaps allowed), so a click or a knock
does not start one, and ends once `silence_ms` of non-speech follow it. Positions are counted in
audio, not wall time: `stream_ms`, `turn_start_ms` and `turn_end_ms` let the caller find the
turn's audio in what it has buffered. SPEECH_STARTED comes at least `min_speech_ms` after the
turn's first voiced frame, by design: keep that much audio (plus a margin for a soft onset)
before it for the recognizer.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import webrtcvad  # type: ignore[import-untyped]

from parleyd.engine.interfaces import LISTEN_RATE, TurnEvent

__all__ = ["FRAME_MS", "VadTurnDetector"]

FRAME_MS: Final = 20
_FRAME_BYTES: Final = 2 * LISTEN_RATE * FRAME_MS // 1000
# A frame webrtcvad calls speech counts only if its level (RMS) is within 30 dB of the loudest
# voiced frame of the onset or turn so far; that peak fades by 0.5 dB a frame (25 dB/s), so one
# bang does not mute the quieter speech after it for long.
_HANGOVER_RATIO: Final = 10 ** (-30 / 20)
_PEAK_DECAY: Final = 10 ** (-0.5 / 20)


def _bytes(ms: int) -> int:
    return max(0, 2 * LISTEN_RATE * ms // 1000)


class VadTurnDetector:
    """`TurnDetector` on webrtcvad. Fed 16 kHz PCM16 in chunks of any length (bytes are buffered
    into 20 ms frames, so how audio is chunked does not change the events).

    - SPEECH_STARTED once voiced frames add up to `min_speech_ms`, with gaps of at most
      `onset_gap_ms` between them (a longer gap drops the would-be onset);
    - SPEECH_STOPPED once `silence_ms` of unvoiced frames follow speech, or at `end_of_turn()`.

    "Voiced" is webrtcvad's verdict, minus its hangover: after speech (or a click) it goes on
    saying "speech" for 60-100 ms, so a voiced frame quieter than `level_floor` (RMS, PCM16
    units) or 30 dB below the turn's recent peak counts as silence. Where the background is
    more than 30 dB below the speech, the stop then comes `silence_ms` (+ up to one frame) after
    the speech really ends, and a click's hangover does not add up to an onset.

    Not thread-safe; cheap enough (a few microseconds a frame) to run on the event loop.
    """

    def __init__(
        self,
        silence_ms: int = 300,
        aggressiveness: int = 2,
        min_speech_ms: int = 120,
        *,
        onset_gap_ms: int = 40,
        level_floor: float = 30.0,
        preroll_ms: int = 200,
    ) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0..3")
        if silence_ms <= 0 or min(min_speech_ms, onset_gap_ms, preroll_ms) < 0:
            raise ValueError(
                "silence_ms must be > 0; min_speech_ms, onset_gap_ms and preroll_ms >= 0"
            )
        self.silence_ms = silence_ms
        self.min_speech_ms = min_speech_ms
        self.onset_gap_ms = onset_gap_ms
        self.level_floor = level_floor
        self.preroll_ms = preroll_ms
        # Recent audio, enough to cover the pre-roll and the longest possible onset.
        onset_span_ms = min_speech_ms + (min_speech_ms // FRAME_MS + 1) * onset_gap_ms
        self._keep_bytes = _bytes(preroll_ms + onset_span_ms + 500)
        self._vad = webrtcvad.Vad(aggressiveness)
        self._buf = bytearray()
        self._recent = bytearray()
        self.reset()

    def reset(self) -> None:
        """Forgets everything, buffered audio and positions included."""
        self._buf.clear()
        self._recent.clear()
        self._recent_start = 0  # stream offset (bytes) of self._recent[0]
        # Set at SPEECH_STARTED: the turn's audio the caller has not treated as speech yet, from
        # `preroll_ms` before its first voiced frame to the end of what was fed (for the
        # recognizer). With several turns in one feed() call, the last one's.
        self.held_speech = b""
        self.stream_ms = 0  # audio consumed into frames since the last reset
        self.speaking = False  # inside a turn: SPEECH_STARTED sent, SPEECH_STOPPED not yet
        # The current turn, or the last one until the next starts: its voiced audio (onset
        # included), where its first voiced frame began and where its last one ended (None
        # while it lasts).
        self.speech_ms = 0
        self.turn_start_ms: int | None = None
        self.turn_end_ms: int | None = None
        self._onset: int | None = None  # a would-be turn: where its first voiced frame began
        self._onset_ms = 0  # ...and its voiced audio so far
        self._gap_ms = 0  # unvoiced audio since the last voiced frame
        self._last_voiced_end = 0
        self._peak = 0.0  # loudest voiced frame of the onset or turn (RMS)

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        """Events in the order they happened in `pcm`. After SPEECH_STARTED, `held_speech` holds
        the turn's audio that came before it (see there)."""
        self._buf += pcm
        self._recent += pcm
        n = len(self._buf) // _FRAME_BYTES
        if n == 0:
            return []
        frames = bytes(self._buf[: n * _FRAME_BYTES])
        del self._buf[: n * _FRAME_BYTES]
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32).reshape(n, -1)
        levels = np.sqrt(np.mean(samples * samples, axis=1))
        events: list[TurnEvent] = []
        for i in range(n):
            voiced = self._vad.is_speech(
                frames[i * _FRAME_BYTES : (i + 1) * _FRAME_BYTES], LISTEN_RATE
            )
            event = self._frame(voiced, float(levels[i]))
            if event is not None:
                events.append(event)
                if event is TurnEvent.SPEECH_STARTED:
                    self._hold()
        if len(self._recent) > 2 * self._keep_bytes:
            drop = len(self._recent) - self._keep_bytes
            del self._recent[:drop]
            self._recent_start += drop
        return events

    def _hold(self) -> None:
        """`held_speech`: from `preroll_ms` before the turn's first voiced frame to the end of
        everything fed so far (this call's audio included, even the part after the event)."""
        assert self.turn_start_ms is not None
        begin = max(_bytes(self.turn_start_ms - self.preroll_ms), self._recent_start)
        self.held_speech = bytes(self._recent[begin - self._recent_start :])

    def end_of_turn(self) -> list[TurnEvent]:
        """Push-to-talk released: ends the turn now if one is under way; drops a would-be onset."""
        if self.speaking:
            return [self._stop()]
        self._drop_onset()
        return []

    def _frame(self, voiced: bool, level: float) -> TurnEvent | None:
        start = self.stream_ms
        self.stream_ms += FRAME_MS
        self._peak *= _PEAK_DECAY
        if voiced:
            # webrtcvad's hangover frames are far quieter than the speech they follow.
            if level < max(self.level_floor, self._peak * _HANGOVER_RATIO):
                voiced = False
            else:
                self._peak = max(self._peak, level)
        if voiced:
            self._gap_ms = 0
            self._last_voiced_end = self.stream_ms
            if self.speaking:
                self.speech_ms += FRAME_MS
                return None
            if self._onset is None:
                self._onset, self._onset_ms = start, 0
                self._peak = level
            self._onset_ms += FRAME_MS
            if self._onset_ms >= self.min_speech_ms:
                self.speaking = True
                self.turn_start_ms, self.turn_end_ms = self._onset, None
                self.speech_ms = self._onset_ms
                self._onset = None
                return TurnEvent.SPEECH_STARTED
            return None
        if self.speaking:
            self._gap_ms += FRAME_MS
            if self._gap_ms >= self.silence_ms:
                return self._stop()
        elif self._onset is not None:
            self._gap_ms += FRAME_MS
            if self._gap_ms > self.onset_gap_ms:
                self._drop_onset()
        return None

    def _stop(self) -> TurnEvent:
        self.speaking = False
        self.turn_end_ms = self._last_voiced_end
        self._gap_ms = 0
        self._peak = 0.0
        return TurnEvent.SPEECH_STOPPED

    def _drop_onset(self) -> None:
        self._onset = None
        self._onset_ms = 0
        self._gap_ms = 0
        self._peak = 0.0
