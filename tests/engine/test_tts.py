"""EspeakSynthesizer and the voice catalogue against the real espeak-ng (no mocks): audio,
timing, visemes, voices. The resampler it uses is tested in tests/audio."""

from __future__ import annotations

import asyncio
import io
import itertools
import shutil
import wave

import numpy as np
import pytest

from parleyd.engine import tts, voices
from parleyd.engine.interfaces import Speech
from parleyd.engine.visemes import VISEME_SET
from tests.support.require import require

if not tts.espeak_available():
    require("libespeak-ng is not usable here (run `make speech-deps`)")

SENTENCE = "Welcome to my little shop, traveller. What can I get for you today?"


def samples(speech: Speech) -> np.ndarray:
    return np.frombuffer(speech.pcm, dtype="<i2").astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def median_f0(speech: Speech) -> float:
    """Median pitch of the voiced 40 ms frames (autocorrelation)."""
    x, rate = samples(speech), speech.sample_rate
    n = int(rate * 0.04)
    found = []
    for i in range(0, len(x) - n, n):
        frame = x[i : i + n] - x[i : i + n].mean()
        if rms(frame) < 1000:
            continue
        ac = np.correlate(frame, frame, "full")[n - 1 :]
        lo, hi = rate // 400, rate // 70
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))


def check_track(speech: Speech, distinct: int = 6) -> None:
    visemes = speech.visemes
    assert visemes, "no visemes"
    assert {v.viseme for v in visemes} <= VISEME_SET
    offsets = [v.offset_ms for v in visemes]
    assert offsets == sorted(set(offsets)), "offsets must strictly increase"
    assert all(a.viseme != b.viseme for a, b in itertools.pairwise(visemes))
    assert offsets[0] >= 0
    assert offsets[-1] <= speech.duration_ms
    assert visemes[0].viseme == "sil" or offsets[0] < 50
    assert visemes[-1].viseme == "sil"
    assert len({v.viseme for v in visemes}) >= distinct  # speech moves the mouth


@pytest.fixture
def synth() -> tts.EspeakSynthesizer:
    return tts.EspeakSynthesizer()


@pytest.mark.parametrize("rate", [16_000, 48_000])
async def test_a_sentence_at_the_asked_rate(synth: tts.EspeakSynthesizer, rate: int) -> None:
    native = await synth.synthesize_native(SENTENCE, voice="en-us")
    speech = await synth.synthesize(SENTENCE, voice="en-us", sample_rate=rate)
    assert native.sample_rate == 22_050
    assert speech.sample_rate == rate
    assert len(speech.pcm) % 2 == 0
    assert rms(samples(speech)) > 800, "speech should not be silent"
    # The same length of time as espeak-ng's own 22050 Hz output: the sample count scales.
    assert 3_000 < speech.duration_ms < 6_000
    assert abs(speech.duration_ms - native.duration_ms) < 0.05 * native.duration_ms
    expected = len(native.pcm) // 2 * rate / native.sample_rate
    assert abs(len(speech.pcm) // 2 - expected) < 0.05 * expected
    check_track(speech)
    check_track(native)


async def test_as_long_as_the_espeak_ng_command_says_it(synth: tts.EspeakSynthesizer) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        require("no espeak-ng command (run `make speech-deps`)")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--stdout",
        "-v",
        "en-us",
        "-s",
        str(tts.DEFAULT_WPM),
        "--",
        SENTENCE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    with wave.open(io.BytesIO(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22_050, 1, 2)
        # espeak-ng streams: its header claims 0x7FFFFFFF frames; count the ones it wrote.
        cli_ms = len(wav.readframes(wav.getnframes())) / 2 * 1000 / wav.getframerate()
    speech = await synth.synthesize(SENTENCE, voice="en-us", sample_rate=16_000)
    assert abs(speech.duration_ms - cli_ms) < 0.1 * cli_ms


async def test_visemes_follow_the_audio(synth: tts.EspeakSynthesizer) -> None:
    """Each "aa" of "pa pa pa pa" starts where the vowel's energy rises (within 25 ms)."""
    speech = await synth.synthesize("pa pa pa pa.", voice="en-us", sample_rate=16_000)
    x = samples(speech)
    hop = speech.sample_rate // 1000
    env = np.array([rms(x[i : i + 5 * hop]) for i in range(0, len(x) - 5 * hop, hop)])
    loud = env >= 0.1 * env.max()
    onsets = [i for i in range(1, len(env)) if loud[i] and not loud[i - 1]]
    vowels = [v.offset_ms for v in speech.visemes if v.viseme == "aa"]
    assert len(vowels) == 4
    for at in vowels:
        assert min(abs(at - o) for o in onsets) <= 25, (at, onsets)
    closures = [v.offset_ms for v in speech.visemes if v.viseme == "PP"]
    assert len(closures) == 4
    assert all(p < a for p, a in zip(closures, vowels, strict=True))


async def test_different_voices_sound_different(synth: tts.EspeakSynthesizer) -> None:
    male = await synth.synthesize(SENTENCE, voice="en-us", sample_rate=16_000)
    female = await synth.synthesize(SENTENCE, voice="en-us+f2", sample_rate=16_000)
    british = await synth.synthesize(SENTENCE, voice="en-gb-x-rp", sample_rate=16_000)
    assert median_f0(female) > 1.3 * median_f0(male)
    assert male.pcm != british.pcm
    assert [v.viseme for v in male.visemes] != [v.viseme for v in british.visemes]


@pytest.mark.parametrize(
    "text",
    [
        "--help",
        '-v "quoted" -- help --stdout -x',
        "--voices=en; help <speak>[[h@'loU]]</speak> $(whoami) `id`",
    ],
)
async def test_option_like_text_is_spoken(synth: tts.EspeakSynthesizer, text: str) -> None:
    speech = await synth.synthesize(text, voice="en-us", sample_rate=16_000)
    assert speech.duration_ms > 300
    assert rms(samples(speech)) > 500
    check_track(speech, distinct=4)
    assert {"kk", "E", "nn", "PP"} <= {v.viseme for v in speech.visemes}  # "help"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x00\x01"])
async def test_empty_text_is_empty_speech(synth: tts.EspeakSynthesizer, text: str) -> None:
    speech = await synth.synthesize(text, voice="en-us", sample_rate=48_000)
    assert speech == Speech(b"", 48_000, ())


async def test_long_text_is_bounded(synth: tts.EspeakSynthesizer) -> None:
    text = "Lorem ipsum dolor sit amet. " * 100  # 2,800 characters
    assert len(tts.clean_text(text)) <= tts.MAX_CHARS
    assert not tts.clean_text(text).endswith(("Lor", "ip"))  # cut between words
    speech = await synth.synthesize(text, voice="en-us", sample_rate=16_000)
    full = await synth.synthesize(tts.clean_text(text), voice="en-us", sample_rate=16_000)
    assert abs(speech.duration_ms - full.duration_ms) < 0.05 * full.duration_ms
    assert speech.duration_ms < tts.MAX_AUDIO_S * 1000


async def test_concurrent_synthesis_is_safe(synth: tts.EspeakSynthesizer) -> None:
    voices = ["en-us", "en-us+f2", "en-gb-x-rp+f2", "en-us+m3"] * 2
    texts = [f"Sentence number {i}, spoken by {v}." for i, v in enumerate(voices)]
    serial = [
        await synth.synthesize(t, voice=v, sample_rate=16_000)
        for t, v in zip(texts, voices, strict=True)
    ]
    together = await asyncio.gather(
        *(
            synth.synthesize(t, voice=v, sample_rate=16_000)
            for t, v in zip(texts, voices, strict=True)
        )
    )
    for one, other in zip(serial, together, strict=True):
        assert abs(one.duration_ms - other.duration_ms) < 0.05 * one.duration_ms
        check_track(other)


async def test_bad_rate_and_unknown_voice(synth: tts.EspeakSynthesizer) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        await synth.synthesize("hi", voice="en-us", sample_rate=96_000)
    speech = await synth.synthesize("Hello there.", voice="no-such-voice", sample_rate=8_000)
    assert speech.duration_ms > 300  # the default voice speaks instead


def test_voice_for_profiles() -> None:
    assert voices.voice_for("shopkeeper") == "en-us+m3"
    assert voices.voice_for("a grumpy Shopkeeper in a village") == "en-us+m3"
    assert voices.voice_for("tutor") == "en-gb-x-rp+f2"
    assert voices.voice_for("") == "en-us"
    assert voices.voice_for("something else") == "en-us"
    # an installed speaker_id wins, an unknown one is ignored
    assert voices.voice_for("shopkeeper", "en-gb-scotland") == "en-gb-scotland"
    assert voices.voice_for("tutor", "en-us+f3") == "en-us+f3"
    assert voices.voice_for("tutor", "nope") == "en-gb-x-rp+f2"
    assert voices.voice_for("tutor", "mb-us1") == "en-gb-x-rp+f2"  # MBROLA: not installed
    for _, voice in voices.ROLE_VOICES:
        assert voices.resolve_voice(voice) is not None, voice


def test_resolve_voice() -> None:
    assert voices.resolve_voice("en-gb") == "gmw/en"
    assert voices.resolve_voice("EN-US+F3") == "gmw/en-US+f3"
    assert voices.resolve_voice("gmw/en-US") == "gmw/en-US"
    assert voices.resolve_voice("en-us+nonexistent") is None
    assert voices.resolve_voice("") is None
    names = {v.identifier for v in voices.installed_voices()}
    assert "gmw/en-US" in names
    assert not any(n.startswith("mb/") for n in names)
