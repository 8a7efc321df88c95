"""espeak-ng phonemes -> OVR visemes, and the viseme track rules."""

from __future__ import annotations

import itertools

import pytest

from parleyd.engine.interfaces import VisemeAt
from parleyd.engine.visemes import (
    PHONEME_VISEMES,
    VISEME_SET,
    VISEMES,
    dedupe,
    viseme_for,
    viseme_track,
    visemes_for,
)

# Every phoneme espeak-ng 1.51 produced for a few thousand words of English (all English voices).
_ESPEAK_ENGLISH = """
    _: t n s d I r k l _ E @ a p z i: eI S m aI oU f 0 v V I2 b w A@ a# D dZ h 3 u: i j g @2 3: N
    @L aU O@ O: I# OI tS T t# o@ r- i@ aI@ aa U@ O2 U aI2 _! e@ t[ i@3 t2 VR @- w# aI3 @5 IR A: Z ?
    n-
"""
ESPEAK_ENGLISH = _ESPEAK_ENGLISH.split()


def test_the_fifteen_ovr_visemes() -> None:
    assert len(VISEMES) == 15
    assert set(VISEMES) == {
        "sil",
        "PP",
        "FF",
        "TH",
        "DD",
        "kk",
        "CH",
        "SS",
        "nn",
        "RR",
        "aa",
        "E",
        "ih",
        "oh",
        "ou",
    }
    for phoneme, visemes in PHONEME_VISEMES.items():
        assert visemes, phoneme
        assert set(visemes) <= VISEME_SET, phoneme


@pytest.mark.parametrize(
    ("phonemes", "viseme"),
    [
        ("p b m", "PP"),
        ("f v", "FF"),
        ("T D", "TH"),
        ("t d t# t2 ?", "DD"),
        ("k g N", "kk"),
        ("tS dZ S Z", "CH"),
        ("s z", "SS"),
        ("n l @L n-", "nn"),
        ("r r- 3 3:", "RR"),
        ("a A A: aa a# V", "aa"),
        ("E e @ @2", "E"),
        ("I i i: I2 j", "ih"),
        ("0 O O: o", "oh"),
        ("U u u: w", "ou"),
        ("_ _: _!", "sil"),
    ],
)
def test_common_phonemes(phonemes: str, viseme: str) -> None:
    for ph in phonemes.split():
        assert viseme_for(ph) == viseme, ph


def test_diphthongs_move_the_mouth() -> None:
    assert visemes_for("aI") == ("aa", "ih")
    assert visemes_for("aU") == ("aa", "ou")
    assert visemes_for("oU") == ("oh", "ou")
    assert visemes_for("eI") == ("E", "ih")
    assert visemes_for("OI") == ("oh", "ih")


def test_every_english_phoneme_espeak_produces_is_mapped() -> None:
    for ph in ESPEAK_ENGLISH:
        assert ph in PHONEME_VISEMES or ph.startswith("_"), ph
        assert visemes_for(ph), ph


def test_unlisted_phonemes_back_off() -> None:
    assert visemes_for("k#") == ("kk",)  # trailing modifier dropped
    assert visemes_for("oU#") == ("oh", "ou")
    assert visemes_for("'a") == ("aa",)  # stress mark ignored
    assert visemes_for("s2") == ("SS",)
    assert visemes_for("&") == ("aa",)  # by vowel class
    assert visemes_for("Q") == ("DD",)  # an unknown consonant
    assert visemes_for(";") == ()  # a bare modifier shows nothing
    assert visemes_for("") == ()
    assert viseme_for(";") is None


def test_track_starts_and_ends_with_silence() -> None:
    track = viseme_track([("h", 11), ("@", 62), ("l", 115), ("oU", 184), ("_:", 400)], end_ms=500)
    assert track == (
        VisemeAt("sil", 0),
        VisemeAt("kk", 11),
        VisemeAt("E", 62),
        VisemeAt("nn", 115),
        VisemeAt("oh", 184),
        VisemeAt("ou", 292),  # the diphthong's second half, at the middle of 184..400
        VisemeAt("sil", 400),
    )


def test_track_merges_repeats_and_adds_final_silence() -> None:
    track = viseme_track([("p", 0), ("b", 40), ("m", 80), ("a", 120), ("A:", 200)], end_ms=300)
    assert track == (VisemeAt("PP", 0), VisemeAt("aa", 120), VisemeAt("sil", 300))


def test_track_offsets_strictly_increase_and_stay_within_the_audio() -> None:
    # 0-length phonemes (same ms), modifiers, out-of-range times.
    events = [("_", 0), ("t", 10), ("s", 10), (";", 12), ("i:", 30), ("n", 30), ("k", 900)]
    track = viseme_track(events, end_ms=500)
    offsets = [v.offset_ms for v in track]
    assert offsets == sorted(set(offsets))
    assert all(0 <= o <= 500 for o in offsets)
    assert [v.viseme for v in track] == ["sil", "SS", "nn", "sil"]
    assert all(a.viseme != b.viseme for a, b in itertools.pairwise(track))


def test_track_of_nothing_is_empty() -> None:
    assert viseme_track([], end_ms=100) == ()
    assert viseme_track([(";", 5)], end_ms=100) == ()


def test_track_without_end_ends_with_silence() -> None:
    track = viseme_track([("a", 50)])
    assert track[0] == VisemeAt("sil", 0)
    assert track[-1].viseme == "sil"
    assert track[-1].offset_ms > 50


def test_dedupe_rejects_foreign_ids() -> None:
    with pytest.raises(ValueError, match="OVR"):
        dedupe([("AA", 0)])
    assert dedupe([("aa", 0), ("aa", 10), ("sil", 20)]) == (VisemeAt("aa", 0), VisemeAt("sil", 20))
