"""Offline speech recognition with PocketSphinx, biased toward what the session is about.

The stock en-us language model of the pocketsphinx wheel is a large generic one: it hears
"what is the refund policy" as "what is the real body". A character's conversation, though, is
about a few things named in its situation, scene and profile. `set_context()` therefore builds a
small bigram model (`training_counts`, `NgramCounts.arpa`) from those texts plus a generic
corpus of things people say to a character (greetings, "where is", "how much", "who are you",
...; package data, data/asr_corpus.toml, read once at import), keeping only words the dictionary
can pronounce, and decodes with it. With no context the stock model is used. Other details, each
measured on bench/asr_accuracy.py:

- a faint noise floor is added to the audio (`NOISE_FLOOR`);
- the first utterance is decoded a second time once it is complete, to learn the speaker's
  cepstral mean (see `PocketSphinxRecognizer.finish`);
- unknown compounds ("Oakvale") are pronounced as their parts (`compound_phones`).

Threading: the recognizer is synchronous and CPU-bound (about 0.1 s of CPU per second of audio
with a context). Call it from one thread at a time, e.g. through `asyncio.to_thread` or a
one-thread executor, one utterance after another; it holds no lock itself. `set_context()` must
not run while an utterance is being decoded: call it between `finish()` and `start()`.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
import threading
import tomllib
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final

import numpy as np
from pocketsphinx import Decoder, get_model_path  # type: ignore[import-untyped]

from parleyd.engine.interfaces import LISTEN_RATE

__all__ = [
    "CORPUS",
    "GENERIC_CORPUS",
    "Corpus",
    "NgramCounts",
    "PocketSphinxRecognizer",
    "build_arpa",
    "compound_phones",
    "lexicon",
    "normalize",
    "number_words",
    "ordinal_words",
    "parse_corpus",
    "training_counts",
]


@dataclass(frozen=True, slots=True)
class Corpus:
    """The generic training text of a session's language model (data/asr_corpus.toml)."""

    # Things a player, visitor or customer says to a character, and short things a character
    # answers: the corpus gives the shape of questions, the session the words they are about.
    sentences: tuple[str, ...]
    # Question frames ("how much is the {}", slot last) around each thing the session names.
    frames: tuple[str, ...]


def parse_corpus(text: str) -> Corpus:
    """The corpus of a TOML text shaped like data/asr_corpus.toml; ValueError if it is not."""
    data = tomllib.loads(text)
    sections = data.get("sentences")
    if not isinstance(sections, dict) or not sections:
        raise ValueError("asr corpus: [sentences] must be a table of sentence lists")
    sentences = [s for key, value in sections.items() for s in _lines(value, f"sentences.{key}")]
    frames = _lines(data.get("frames"), "frames")
    for frame in frames:
        # `NgramCounts.add_frame` fills the slot last and keeps the words before it once.
        slots = frame.count("{") + frame.count("}")
        if slots != 2 or not frame.endswith(" {}") or not frame[:-3].strip():
            raise ValueError(f"asr corpus: frame {frame!r} must be words then one slot ' {{}}'")
    return Corpus(tuple(sentences), frames)


def _lines(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"asr corpus: {where} must be a non-empty list")
    if not all(isinstance(s, str) and s.strip() for s in value):
        raise ValueError(f"asr corpus: {where} must hold only non-blank strings")
    return tuple(value)


CORPUS: Final = parse_corpus(
    resources.files("parleyd.engine").joinpath("data", "asr_corpus.toml").read_text("utf-8")
)
GENERIC_CORPUS: Final[tuple[str, ...]] = CORPUS.sentences

# Audio the first decoded utterance needs before its cepstral mean is trusted.
CMN_MIN_MS: Final = 500
# Noise added to every sample (standard deviation, in PCM16 units: about -50 dBFS). Audio with
# spectral holes (digital silence, synthetic or noise-suppressed speech) pushes the front end's
# log-spectra to extremes the acoustic model never saw; a faint noise floor, as any microphone
# has, fills them. On the espeak-ng benchmark it lifts word accuracy from 0.69 to 0.82 (biased
# model) and from 0.52 to 0.64 (stock model); on audio that is already noisy it changes little.
NOISE_FLOOR: Final = 100.0
# pocketsphinx settings beyond its defaults.
DECODER_OPTIONS: Final[Mapping[str, str | int | float | bool]] = {}
# Relative weight of one sentence of the session's texts against one of the generic corpus.
CONTEXT_WEIGHT: Final = 3.0
# Weight of each sentence made of a question frame (`Corpus.frames`) and a thing the session
# names (see `training_counts`).
FRAME_WEIGHT: Final = 0.3
_DETERMINERS: Final = frozenset({"the", "a", "an", "your", "my", "our", "his", "her", "their"})
_STOP: Final = frozenset(
    {
        "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "is",
        "are", "was", "were", "be", "been", "it", "that", "this", "you", "i", "he", "she", "they",
        "we", "his", "her", "their", "your", "my", "our", "as", "by", "from", "if", "not", "no",
        "so", "than", "then", "who", "what", "where", "when", "how", "why", "which", "will", "can",
        "do", "does", "did", "has", "have", "had", "very", "only", "also", "all", "any", "some",
    }
)  # fmt: skip
_FILLER: Final = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_ALT: Final = re.compile(r"\(\d+\)$")
_SENTENCE_SPLIT: Final = re.compile(r"[.!?;:\n\r\t()\[\]{}\"“”]+")
_WORD: Final = re.compile(r"\d+(?:st|nd|rd|th)\b|[a-z]+(?:'[a-z]+)*|\d+")
_THOUSANDS: Final = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECIMAL: Final = re.compile(r"(\d)\.(\d)")

_ONES: Final = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS: Final = (
    "_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
)  # fmt: skip


def number_words(n: int) -> list[str]:
    """0 <= n < 10**9 as English words: 1250 -> one thousand two hundred fifty."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for size, name in ((1_000_000, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return number_words(n // size) + [name] + (number_words(rest) if rest else [])
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> list[str]:
    """3 -> third, 21 -> twenty first, 40 -> fortieth."""
    words = number_words(n)
    last = words[-1]
    irregular = {"one": "first", "two": "second", "three": "third", "five": "fifth"}
    irregular |= {"eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
    if last in irregular:
        words[-1] = irregular[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def normalize(text: str) -> list[list[str]]:
    """Text -> sentences of lowercase words, numbers spelled out ("1,250", "2.5", "3rd"),
    punctuation gone."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("%", " percent ")
    text = text.replace("&", " and ")
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _DECIMAL.sub(r"\1 point \2", text)
    sentences = []
    for part in _SENTENCE_SPLIT.split(text):
        words: list[str] = []
        for tok in _WORD.findall(part):
            if not tok[0].isdigit():
                words.append(tok)
                continue
            digits = tok.rstrip("stndrh")
            if len(digits) > 9:
                words.extend(number_words(int(d))[0] for d in digits)
            elif digits != tok:
                words.extend(ordinal_words(int(digits)))
            else:
                words.extend(number_words(int(digits)))
        if words:
            sentences.append(words)
    return sentences


def _thing_phrases(sentences: Iterable[list[str]]) -> set[tuple[str, ...]]:
    """Noun-ish phrases the session names: up to two words after a determiner, stopping at a
    function word ("sell the long swords at" -> ("long", "swords"))."""
    things: set[tuple[str, ...]] = set()
    for words in sentences:
        for i, w in enumerate(words[:-1]):
            if w not in _DETERMINERS:
                continue
            phrase: list[str] = []
            for nxt in words[i + 1 : i + 3]:
                if nxt in _STOP or nxt.isdigit():
                    break
                phrase.append(nxt)
            if phrase:
                things.add(tuple(phrase))
    return things


def training_counts(
    session: list[list[str]], context_weight: float, known: Callable[[str], bool]
) -> NgramCounts:
    """The counts of a session's language model:

    - the generic corpus (weight 1 per sentence): how people ask;
    - the session's sentences (`context_weight`): what they ask about;
    - question frames ("how much is the {}", ...) around each thing the session names (a phrase
      after a determiner, or any content word), `FRAME_WEIGHT` each;
    - for each word in -s whose stem the dictionary knows ("lives", "shields"), the stem with its
      neighbours ("mayor live"): sessions describe in the third person and in the plural
      ("the mayor lives"), people ask with "does" and in the singular ("where does the mayor
      live", "a shield").
    """
    counts = _generic_counts().copy()
    for words in session:
        counts.add(words, context_weight)
    things = _thing_phrases(session)
    things |= {(w,) for words in session for w in words if w not in _STOP and len(w) > 2}
    ordered = sorted(things)
    for frame in CORPUS.frames:
        counts.add_frame(frame, ordered, FRAME_WEIGHT)
    for words in session:
        for i, w in enumerate(words):
            if len(w) > 3 and w.endswith("s") and not w.endswith("ss") and known(w[:-1]):
                counts.add(
                    [*words[max(0, i - 1) : i], w[:-1], *words[i + 1 : i + 2]], context_weight
                )
    return counts


@functools.cache
def _generic_counts() -> NgramCounts:
    counts = NgramCounts()
    for words in normalize("\n".join(GENERIC_CORPUS)):
        counts.add(words)
    return counts


class NgramCounts:
    """Weighted unigram and bigram counts of sentences (with <s> and </s>), and the ARPA bigram
    model made from them."""

    def __init__(self) -> None:
        self.unigrams: defaultdict[str, float] = defaultdict(float)
        self.bigrams: defaultdict[str, defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )

    def copy(self) -> NgramCounts:
        other = NgramCounts()
        other.unigrams = defaultdict(float, self.unigrams)
        for h, followers in self.bigrams.items():
            other.bigrams[h] = defaultdict(float, followers)
        return other

    @property
    def vocabulary(self) -> set[str]:
        return {w for w in self.unigrams if w != "</s>"}

    def add(self, words: Sequence[str], weight: float = 1.0) -> None:
        if not words:
            return
        prev = "<s>"
        for w in (*words, "</s>"):
            self.unigrams[w] += weight
            self.bigrams[prev][w] += weight
            prev = w

    def add_frame(self, frame: str, fillers: Sequence[Sequence[str]], weight: float) -> None:
        """Adds `frame` ("how much is the {}", slot last) once per filler, `weight` each: the same
        counts as adding every filled sentence, but the frame's own words only once."""
        prefix = frame.removesuffix("{}").split()
        n = weight * len(fillers)
        if not prefix or not n:
            return
        prev = "<s>"
        for w in prefix:
            self.unigrams[w] += n
            self.bigrams[prev][w] += n
            prev = w
        for filler in fillers:
            last = prev
            for w in (*filler, "</s>"):
                self.unigrams[w] += weight
                self.bigrams[last][w] += weight
                last = w

    def arpa(self) -> str:
        """Interpolated Witten-Bell bigrams written in backoff form (seen bigrams stored, unseen
        ones reach the unigram through the history's backoff weight). Unigrams are add-0.5
        smoothed so every word of the vocabulary stays reachable."""
        uni = self.unigrams
        vocab = sorted(uni)  # every word that can follow: all but <s>
        total = sum(uni.values())
        denom = total + 0.5 * len(vocab)
        p_uni = {w: (uni[w] + 0.5) / denom for w in vocab}
        log10 = math.log10
        lines_2: list[str] = []
        backoff: dict[str, float] = {}
        for h in ["<s>", *vocab]:
            followers = self.bigrams.get(h)
            if not followers:
                continue
            t_h = len(followers)
            norm = 1.0 / (sum(followers.values()) + t_h)
            seen_p = 0.0
            seen_uni = 0.0
            for w, c in sorted(followers.items()):
                pu = p_uni[w]
                p = (c + t_h * pu) * norm
                seen_p += p
                seen_uni += pu
                lines_2.append(f"{log10(p):.5f} {h} {w}")
            left_uni = 1.0 - seen_uni
            backoff[h] = max((1.0 - seen_p) / left_uni, 1e-9) if left_uni > 1e-9 else 1e-9
        lines_1 = [f"-99.00000 <s> {log10(backoff.get('<s>', 1.0)):.5f}"]
        for w in vocab:
            bo = f" {log10(backoff[w]):.5f}" if w in backoff else ""
            lines_1.append(f"{log10(p_uni[w]):.5f} {w}{bo}")
        return "\n".join(
            [
                "\\data\\",
                f"ngram 1={len(lines_1)}",
                f"ngram 2={len(lines_2)}",
                "",
                "\\1-grams:",
                *lines_1,
                "",
                "\\2-grams:",
                *lines_2,
                "",
                "\\end\\",
                "",
            ]
        )


def build_arpa(weighted: Iterable[tuple[Sequence[str], float]]) -> str:
    """A bigram ARPA model (see `NgramCounts.arpa`) from weighted sentences."""
    counts = NgramCounts()
    for words, weight in weighted:
        counts.add(words, weight)
    return counts.arpa()


_LEXICON: dict[str, tuple[str, ...]] | None = None
_LEXICON_LOCK: Final = threading.Lock()


def lexicon() -> dict[str, tuple[str, ...]]:
    """The wheel's CMU dictionary, word -> its pronunciations (read once per process)."""
    global _LEXICON
    with _LEXICON_LOCK:
        if _LEXICON is None:
            lex: dict[str, list[str]] = {}
            with open(get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
                for line in f:
                    word, _, phones = line.strip().partition(" ")
                    if word and phones:
                        lex.setdefault(_ALT.sub("", word), []).append(phones.strip())
            _LEXICON = {w: tuple(p) for w, p in lex.items()}
        return _LEXICON


def compound_phones(word: str, lex: dict[str, tuple[str, ...]]) -> str | None:
    """A pronunciation for an unknown compound made of two or three dictionary words of at least
    three letters each ("oakvale" = "oak" + "vale", "longsword"), else None."""
    n = len(word)
    if n < 6 or n > 24 or not word.isalpha():
        return None
    for i in range(n - 3, 2, -1):  # prefer the longest head
        head, tail = lex.get(word[:i]), lex.get(word[i:])
        if head and tail:
            return f"{head[0]} {tail[0]}"
    for i in range(3, n - 5):
        head = lex.get(word[:i])
        if not head:
            continue
        for j in range(n - 3, i + 2, -1):
            mid, tail = lex.get(word[i:j]), lex.get(word[j:])
            if mid and tail:
                return f"{head[0]} {mid[0]} {tail[0]}"
    return None


class PocketSphinxRecognizer:
    """`Recognizer` on PocketSphinx 5 with the en-us acoustic model and dictionary of the wheel.

    With a context, decoding uses a decoder of its own whose dictionary holds only the words of
    the context model: building it takes milliseconds (adding a model to a decoder that holds
    the whole 134k-word dictionary takes over a second). The stock decoder (0.4 s to load,
    ~85 MB) is made only if a context-free utterance is ever decoded.

    Not thread-safe: use from one thread at a time (see the module docstring).
    """

    def __init__(
        self,
        *,
        context_weight: float = CONTEXT_WEIGHT,
        compounds: bool = True,
        noise_floor: float = NOISE_FLOOR,
        options: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """`context_weight`: weight of a session sentence against a generic one; `compounds`:
        give unknown compound words ("oakvale") the pronunciation of their parts; `noise_floor`:
        standard deviation of the Gaussian noise added to the audio (0: none); `options`:
        extra pocketsphinx configuration (e.g. {"lw": 6.5}), for every decoder."""
        self._lex = lexicon()
        self._options = dict(DECODER_OPTIONS if options is None else options)
        self._noise_floor = noise_floor
        self._rng = np.random.default_rng(0)
        self._context_weight = context_weight
        self._compounds = compounds
        self._extra: dict[str, str] = {}  # compounds: word -> pronunciation
        self._generic: Decoder | None = None
        self._context: Decoder | None = None
        self._context_key: tuple[str, ...] = ()  # the normalized texts it was built from
        self._in_utt = False
        self._partial: str | None = None
        self._cmn: str | None = None  # cepstral mean of the speaker's audio, once known
        self._audio = bytearray()  # the utterance so far, kept until the cepstral mean is known
        self._carry = b""  # the first byte of a sample whose second byte has not come yet
        self.vocabulary: frozenset[str] = frozenset()  # words of the context model, if any

    @property
    def _decoder(self) -> Decoder:
        if self._context is not None:
            return self._context
        if self._generic is None:
            self._generic = self._new_decoder()
        return self._generic

    def _new_decoder(self, **paths: str) -> Decoder:
        decoder = Decoder(loglevel="FATAL", samprate=LISTEN_RATE, **self._options, **paths)
        if self._cmn is not None:
            decoder.set_cmn(self._cmn)
        return decoder

    # -- context -------------------------------------------------------------------------------

    def set_context(self, texts: Sequence[str]) -> None:
        """Recognize toward `texts` (situation, scene, profile...); nothing in them: the stock
        model. Words the dictionary cannot pronounce are left out."""
        if self._in_utt:
            raise RuntimeError("set_context() during an utterance: call finish() first")
        session = [s for t in texts if t and t.strip() for s in normalize(t)]
        key = tuple(" ".join(words) for words in session)
        if key == self._context_key:
            return  # the same words: the model would be the same
        self._context_key = key
        if not session:
            self._context = None
            self.vocabulary = frozenset()
            return
        session_runs = [run for words in session for run in self._known_runs(words)]
        counts = training_counts(session_runs, self._context_weight, self._lex.__contains__)
        vocab = sorted(counts.vocabulary)
        dict_lines: list[str] = []
        for w in vocab:
            prons = self._lex.get(w) or (self._extra[w],)
            dict_lines.extend(
                f"{w}{'' if i == 0 else f'({i + 1})'} {p}\n" for i, p in enumerate(prons)
            )
        with tempfile.TemporaryDirectory(prefix="parleyd-asr-") as tmp:
            lm_path = os.path.join(tmp, "context.arpa")
            dict_path = os.path.join(tmp, "context.dict")
            with open(lm_path, "w", encoding="utf-8") as f:
                f.write(counts.arpa())
            with open(dict_path, "w", encoding="utf-8") as f:
                f.writelines(dict_lines)
            self._context = self._new_decoder(dict=dict_path, lm=lm_path)
        self.vocabulary = frozenset(vocab)

    def _known_runs(self, words: list[str]) -> list[list[str]]:
        """Splits a sentence at words the dictionary cannot pronounce (dropping them), so no
        bigram is invented across a gap."""
        runs: list[list[str]] = [[]]
        for w in words:
            if self._pronounceable(w):
                runs[-1].append(w)
            elif runs[-1]:
                runs.append([])
        return [r for r in runs if r]

    def _pronounceable(self, word: str) -> bool:
        if word in self._lex or word in self._extra:
            return True
        if self._compounds:
            phones = compound_phones(word, self._lex)
            if phones is not None:
                self._extra[word] = phones
                return True
        return False

    # -- one utterance -------------------------------------------------------------------------

    def start(self) -> None:
        decoder = self._decoder
        if self._in_utt:
            decoder.end_utt()
        decoder.start_utt()
        self._in_utt = True
        self._partial = None
        self._audio.clear()
        self._carry = b""

    def feed(self, pcm: bytes) -> str | None:
        """Decodes `pcm` (16 kHz PCM16); returns the partial text when it changed, else None."""
        if not self._in_utt:
            self.start()
        if self._carry or len(pcm) % 2:  # a sample split across chunks waits for its other half
            pcm = self._carry + pcm
            cut = len(pcm) - len(pcm) % 2
            pcm, self._carry = pcm[:cut], pcm[cut:]
        if not pcm:
            return None
        if self._noise_floor > 0:
            pcm = self._add_noise(pcm)
        if self._cmn is None:
            self._audio += pcm
        decoder = self._decoder
        decoder.process_raw(pcm, False, False)
        hyp = decoder.hyp()
        text = _clean(hyp.hypstr) if hyp is not None else ""
        if text and text != self._partial:
            self._partial = text
            return text
        return None

    def finish(self) -> str:
        """The utterance's text. Until the speaker's cepstral mean is known (the first utterance
        of at least `CMN_MIN_MS`), the live pass ran with the model's default mean, which is far
        from real audio and costs many words: such an utterance is decoded again as a whole
        (batch mean), which also sets the mean for every later utterance. That first utterance
        therefore costs twice the CPU; later ones are decoded once, live."""
        if not self._in_utt:
            return ""
        decoder = self._decoder
        decoder.end_utt()
        self._in_utt = False
        if self._cmn is None and self._audio:
            decoder.start_utt()
            decoder.process_raw(bytes(self._audio), False, True)
            decoder.end_utt()
            if len(self._audio) >= 2 * LISTEN_RATE * CMN_MIN_MS // 1000:
                self._cmn = decoder.get_cmn(False)
        self._audio.clear()
        segments = decoder.seg()  # None when no audio came
        return _clean(" ".join(seg.word for seg in segments or ()))

    def _add_noise(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        x += self._rng.normal(0.0, self._noise_floor, x.size).astype(np.float32)
        return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()

    @property
    def cmn(self) -> str | None:
        """The cepstral mean in use once known (comma-separated), for another recognizer of the
        same audio source; None before the first utterance."""
        return self._cmn

    @cmn.setter
    def cmn(self, value: str | None) -> None:
        self._cmn = value
        for decoder in (self._generic, self._context):
            if decoder is not None and value is not None:
                decoder.set_cmn(value)


def _clean(hypstr: str) -> str:
    words = []
    for w in hypstr.split():
        if _FILLER.match(w):
            continue
        words.append(_ALT.sub("", w).lower())
    return " ".join(words)
