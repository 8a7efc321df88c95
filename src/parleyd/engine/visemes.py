"""Phonemes -> OVR visemes, and timed phoneme events -> a viseme track.

The 15 visemes are the Oculus/Meta OVR LipSync set, which game engines and avatar rigs expect:

    sil  silence, mouth at rest         PP  p b m (lips pressed)      FF  f v (lip on teeth)
    TH   T D (tongue between teeth)     DD  t d (tongue behind teeth) kk  k g N (back of tongue)
    CH   tS dZ S Z (lips pushed out)    SS  s z (teeth together)      nn  n l
    RR   r (rounded, tense)             aa  open vowels (father, cut) E   mid front vowels (bed)
    ih   close front vowels (sit, see)  oh  mid/open rounded (go, law) ou  close rounded (food, w)

Phonemes are espeak-ng's ASCII mnemonics (its Kirshenbaum-like names, the ones `espeak-ng -x`
prints and its phoneme events carry): ``p b m f v T D t d s z S Z tS dZ k g N n l r w j h`` and the
vowels ``a A A: aa a# V @ @2 3 3: E e I i i: 0 O O: o U u u: ...``. The mapping below lists every
English phoneme espeak-ng 1.51 produced over a few thousand words of varied text (all its English
voices), plus common phonemes of other languages. Diphthongs map to two visemes (``aI`` -> aa,
ih) and the track puts the second at the middle of the phoneme. Anything unlisted backs off by
removing trailing modifier characters (``t#`` -> ``t``, ``i@3`` -> ``i@``), then by its first
character's class (vowel letters -> a vowel viseme, otherwise "DD"); pauses (``_``, ``_:``,
``_!``) are "sil", and bare modifiers (``;`` palatalisation, stress marks) change nothing.

Choices worth knowing: ``h`` takes "kk" (open, relaxed jaw; OVR has no glottal viseme); ``N`` (ng)
is "kk" (the tongue is at the back); schwa ``@`` is "E" (a small neutral opening, not the wide
"aa"); r-coloured vowels ``3 3:`` are "RR"; ``w`` is "ou" and ``j`` is "ih", as the lips show them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from parleyd.engine.interfaces import VisemeAt

VISEMES: tuple[str, ...] = (
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
)
VISEME_SET = frozenset(VISEMES)

# espeak-ng phoneme mnemonic -> one viseme, or several for diphthongs (spread over the phoneme).
PHONEME_VISEMES: dict[str, tuple[str, ...]] = {
    # -- consonants --------------------------------------------------------------------------
    "p": ("PP",),
    "b": ("PP",),
    "m": ("PP",),
    "m-": ("PP",),  # syllabic m
    "B": ("PP",),  # bilabial fricative (Spanish "b")
    "f": ("FF",),
    "v": ("FF",),
    "T": ("TH",),
    "D": ("TH",),
    "t": ("DD",),
    "d": ("DD",),
    "t#": ("DD",),
    "t2": ("DD",),
    "t[": ("DD",),  # dental t
    "d#": ("DD",),
    "*": ("DD",),  # flap (American "water")
    "?": ("DD",),  # glottal stop
    "k": ("kk",),
    "g": ("kk",),
    "N": ("kk",),  # ng
    "x": ("kk",),  # loch
    "X": ("kk",),
    "c": ("kk",),
    "q": ("kk",),
    "G": ("kk",),
    "h": ("kk",),
    "tS": ("CH",),
    "dZ": ("CH",),
    "S": ("CH",),
    "Z": ("CH",),
    "C": ("CH",),  # German "ich"
    "s": ("SS",),
    "z": ("SS",),
    "ts": ("SS",),
    "dz": ("SS",),
    "n": ("nn",),
    "n-": ("nn",),  # syllabic n
    "l": ("nn",),
    "L": ("nn",),
    "@L": ("nn",),  # syllabic l (bottle)
    "l/": ("nn",),
    "J": ("nn",),  # palatal n
    "n^": ("nn",),
    "r": ("RR",),
    "r-": ("RR",),
    "R": ("RR",),
    "w": ("ou",),
    "w#": ("ou",),
    "W": ("ou",),
    "j": ("ih",),
    # -- vowels ------------------------------------------------------------------------------
    "a": ("aa",),
    "aa": ("aa",),
    "a#": ("aa",),
    "a2": ("aa",),
    "A": ("aa",),
    "A:": ("aa",),
    "A@": ("aa", "RR"),  # start (US), or aa alone in RP
    "V": ("aa",),  # strut
    "VR": ("aa", "RR"),  # hurry (US)
    "@": ("E",),
    "@2": ("E",),
    "@5": ("E",),
    "@-": ("E",),
    "3": ("RR",),  # letter (US, r-coloured)
    "3:": ("RR",),  # nurse
    "E": ("E",),
    "E2": ("E",),
    "e": ("E",),
    "e@": ("E", "E"),  # square
    "eI": ("E", "ih"),  # face
    "I": ("ih",),
    "I2": ("ih",),
    "I#": ("ih",),
    "IR": ("ih", "RR"),
    "i": ("ih",),
    "i:": ("ih",),
    "i@": ("ih", "E"),  # near
    "i@3": ("ih", "RR"),
    "y": ("ou",),  # French u, German ü
    "Y": ("ou",),
    "0": ("oh",),  # lot (RP)
    "O": ("oh",),
    "O:": ("oh",),
    "O2": ("oh",),
    "O@": ("oh", "RR"),  # north
    "o": ("oh",),
    "o@": ("oh", "RR"),  # force
    "oU": ("oh", "ou"),  # goat
    "OI": ("oh", "ih"),  # choice
    "U": ("ou",),
    "U@": ("ou", "E"),  # cure
    "u": ("ou",),
    "u:": ("ou",),
    "aI": ("aa", "ih"),  # price
    "aI2": ("aa", "ih"),
    "aI3": ("aa", "ih"),
    "aI@": ("aa", "ih", "E"),  # fire
    "aU": ("aa", "ou"),  # mouth
    "aU@": ("aa", "ou", "E"),  # hour
}

# Characters that only modify the phoneme before or after them (stress, length, syllabicity).
_MODIFIERS = frozenset("'\",%=;:#!-[]/^0123456789")
_VOWEL_START = {
    "a": "aa",
    "A": "aa",
    "V": "aa",
    "&": "aa",
    "@": "E",
    "3": "RR",
    "E": "E",
    "e": "E",
    "I": "ih",
    "i": "ih",
    "y": "ou",
    "Y": "ou",
    "0": "oh",
    "O": "oh",
    "o": "oh",
    "U": "ou",
    "u": "ou",
}


def visemes_for(phoneme: str) -> tuple[str, ...]:
    """The viseme(s) of one espeak-ng phoneme mnemonic; () when it shows nothing by itself."""
    ph = phoneme.strip().lstrip("'\",%=")
    if not ph:
        return ()
    if ph.startswith("_"):
        return ("sil",)  # pauses: _ _: _! _^_ ...
    known = PHONEME_VISEMES.get(ph)
    if known is not None:
        return known
    # Back off: drop trailing modifiers / variant digits one at a time (t# -> t, i@3 -> i@).
    candidate = ph
    while len(candidate) > 1 and candidate[-1] in _MODIFIERS:
        candidate = candidate[:-1]
        known = PHONEME_VISEMES.get(candidate)
        if known is not None:
            return known
    # Longest known prefix (for unlisted diphthongs and clusters of other languages).
    for end in range(len(ph) - 1, 0, -1):
        known = PHONEME_VISEMES.get(ph[:end])
        if known is not None:
            return known
    if all(c in _MODIFIERS for c in ph):
        return ()
    first = ph[0]
    return (_VOWEL_START.get(first, "DD"),)


def viseme_for(phoneme: str) -> str | None:
    """The main (first) viseme of a phoneme; None for bare modifiers."""
    found = visemes_for(phoneme)
    return found[0] if found else None


def viseme_track(
    events: Iterable[tuple[str, int]], *, end_ms: int | None = None
) -> tuple[VisemeAt, ...]:
    """(phoneme, start_ms) events, in time order -> a deduplicated viseme track.

    The track starts with "sil" at 0 when speech starts later, merges consecutive equal visemes
    (keeping the first start), keeps one viseme per offset (the later phoneme wins over one that
    lasted 0 ms), and ends with "sil" (at `end_ms` if the last phoneme is not already a pause).
    Offsets are clamped to [0, end_ms] and strictly increase. Diphthongs spread their visemes
    evenly over the time until the next phoneme (or `end_ms`).
    """
    timed = [(ph, max(0, int(ms))) for ph, ms in events]
    marks: list[tuple[str, int]] = []
    for idx, (ph, start) in enumerate(timed):
        parts = visemes_for(ph)
        if not parts:
            continue
        nxt = timed[idx + 1][1] if idx + 1 < len(timed) else end_ms
        marks.append((parts[0], start))
        if len(parts) > 1 and nxt is not None and nxt > start:
            step = (nxt - start) / len(parts)
            marks.extend((v, start + round(step * k)) for k, v in enumerate(parts[1:], 1))
    return dedupe(marks, end_ms=end_ms)


def dedupe(marks: Sequence[tuple[str, int]], *, end_ms: int | None = None) -> tuple[VisemeAt, ...]:
    """(viseme, offset_ms) in time order -> the track rules of `viseme_track`."""
    out: list[VisemeAt] = []
    for viseme, offset in marks:
        if viseme not in VISEME_SET:
            raise ValueError(f"not an OVR viseme: {viseme!r}")
        at = max(0, offset)
        if end_ms is not None:
            at = min(at, end_ms)
        if out and at < out[-1].offset_ms:
            at = out[-1].offset_ms  # out of order: treat as simultaneous
        if out and out[-1].offset_ms == at:
            out.pop()  # the earlier one lasted 0 ms
        if out and out[-1].viseme == viseme:
            continue
        out.append(VisemeAt(viseme, at))
    if not out:
        return ()
    if out[0].offset_ms > 0:
        if out[0].viseme == "sil":
            out[0] = VisemeAt("sil", 0)
        else:
            out.insert(0, VisemeAt("sil", 0))
    if out[-1].viseme != "sil":
        end = end_ms if end_ms is not None else out[-1].offset_ms + 1
        if end <= out[-1].offset_ms:
            end = out[-1].offset_ms
            out.pop()
            if out and out[-1].viseme == "sil":
                return tuple(out)
        out.append(VisemeAt("sil", end))
    return tuple(out)


__all__ = [
    "PHONEME_VISEMES",
    "VISEMES",
    "VISEME_SET",
    "dedupe",
    "viseme_for",
    "viseme_track",
    "visemes_for",
]
