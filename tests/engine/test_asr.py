"""PocketSphinxRecognizer on real speech (espeak-ng): the session-biased language model hears a
character's own words that the stock model mishears."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest

from parleyd.engine.asr import (
    GENERIC_CORPUS,
    NgramCounts,
    PocketSphinxRecognizer,
    build_arpa,
    compound_phones,
    lexicon,
    normalize,
    number_words,
    ordinal_words,
)

from .speech import say, silence

SITUATION = (
    "You are Garrick, the blacksmith of Millbrook. You sell swords, daggers and shields. "
    "A sword costs thirty gold coins and a dagger costs 12. "
    "Refund policy: you refund any blade returned unused within three days. "
    "Your forge is next to the old mill."
)
PROFILE = "Garrick is a patient old man who loves his craft."


def hear(rec: PocketSphinxRecognizer, text: str, voice: str = "en-us") -> tuple[str, list[str]]:
    """Speaks `text`, feeds it in 20 ms chunks; (final text, partial hypotheses)."""
    pcm = silence(200) + say(text, voice=voice) + silence(200)
    rec.start()
    partials = []
    for i in range(0, len(pcm), 640):
        partial = rec.feed(pcm[i : i + 640])
        if partial is not None:
            partials.append(partial)
    return rec.finish(), partials


def word_errors(ref: str, hyp: str) -> int:
    r, h = ref.split(), hyp.split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]


@pytest.fixture
def biased() -> PocketSphinxRecognizer:
    rec = PocketSphinxRecognizer()
    rec.set_context([SITUATION, PROFILE])
    return rec


@pytest.mark.parametrize(
    ("question", "voice", "words"),
    [
        ("what is the refund policy", "en-us", {"refund", "policy"}),
        ("what is the refund policy", "en-gb-x-rp", {"refund", "policy"}),
        ("how much is the sword", "en-us", {"how", "much", "sword"}),
        ("do you sell daggers", "en-us", {"sell", "daggers"}),
    ],
)
def test_context_words_are_heard(
    biased: PocketSphinxRecognizer, question: str, voice: str, words: set[str]
) -> None:
    text, partials = hear(biased, question, voice)
    assert words <= set(text.split()), text
    assert text == text.lower()
    assert not set("<[(") & set(text)  # no fillers, no pronunciation variants
    assert partials, "no partial hypothesis while the audio came in"


def test_context_improves_on_the_stock_model() -> None:
    questions = [
        "what is the refund policy",
        "how much is the sword",
        "do you sell shields",
        "where is your forge",
        "can i get a refund",
    ]
    errors = {}
    transcripts = {}
    for name, context in (("biased", [SITUATION, PROFILE]), ("stock", [])):
        rec = PocketSphinxRecognizer()
        rec.set_context(context)
        heard = [hear(rec, q)[0] for q in questions]
        transcripts[name] = heard
        errors[name] = sum(word_errors(q, h) for q, h in zip(questions, heard, strict=True))
    assert errors["biased"] < errors["stock"], transcripts
    # The biased model gets at least one sentence right that the stock one gets wrong.
    assert any(
        b == q != s
        for q, b, s in zip(questions, transcripts["biased"], transcripts["stock"], strict=True)
    ), transcripts


def test_partials_grow_and_are_only_reported_when_they_change(
    biased: PocketSphinxRecognizer,
) -> None:
    text, partials = hear(biased, "how much is the sword")
    assert partials
    assert all(a != b for a, b in itertools.pairwise(partials))
    assert partials[-1].split()[0] == text.split()[0]


def test_silence_is_nothing(biased: PocketSphinxRecognizer) -> None:
    biased.start()
    for _ in range(50):
        biased.feed(silence(20))
    assert biased.finish() == ""


def test_finish_without_audio_and_odd_bytes() -> None:
    rec = PocketSphinxRecognizer()
    rec.set_context([SITUATION])
    assert rec.finish() == ""  # never started
    rec.start()
    assert rec.finish() == ""
    pcm = silence(200) + say("how much is the sword") + silence(200)
    rec.start()
    for i in range(0, len(pcm), 333):  # odd sizes: a sample may be split across chunks
        rec.feed(pcm[i : i + 333])
    assert "sword" in rec.finish().split()


def test_feed_without_start_starts_an_utterance(biased: PocketSphinxRecognizer) -> None:
    pcm = silence(200) + say("what is the refund policy") + silence(200)
    for i in range(0, len(pcm), 3200):
        biased.feed(pcm[i : i + 3200])
    assert "refund" in biased.finish().split()


def test_empty_context_falls_back_to_the_stock_model(biased: PocketSphinxRecognizer) -> None:
    assert "refund" in biased.vocabulary
    biased.set_context([])
    assert biased.vocabulary == frozenset()
    text, _ = hear(biased, "can you give me a discount")
    assert {"can", "you", "give", "me"} <= set(text.split()), text
    biased.set_context(["", "   "])  # blank texts are no context either
    assert biased.vocabulary == frozenset()
    biased.set_context([SITUATION])  # and back
    assert "refund" in biased.vocabulary


def test_context_cannot_change_mid_utterance(biased: PocketSphinxRecognizer) -> None:
    biased.start()
    biased.feed(say("hello"))
    with pytest.raises(RuntimeError, match="finish"):
        biased.set_context(["something else"])
    biased.finish()
    biased.set_context(["something else"])


def test_vocabulary_keeps_only_pronounceable_words() -> None:
    rec = PocketSphinxRecognizer()
    rec.set_context(["Zxqvtl sells the moonblade in Oakvale for 40 gold."])
    assert "zxqvtl" not in rec.vocabulary  # nothing to pronounce it with: dropped
    assert {"oakvale", "moonblade"} <= rec.vocabulary  # compounds of dictionary words
    assert {"forty", "gold"} <= rec.vocabulary  # numbers are spelled out
    assert "40" not in rec.vocabulary


def test_context_rebuild_is_cheap_for_a_big_situation() -> None:
    """A 2,500-word situation with a ~2,000-word vocabulary: the worst case, as each distinct
    word adds its own question frames."""
    words = sorted(w for w in lexicon() if w.isalpha() and len(w) > 3)
    rng = random.Random(5)
    sentences = []
    count = 0
    while count < 2500:
        n = rng.randint(6, 14)
        sentences.append("The " + " ".join(rng.choice(words) for _ in range(n)) + ".")
        count += n + 1
    text = " ".join(sentences)
    rec = PocketSphinxRecognizer()
    rec.set_context(["warm up"])
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        rec.set_context([text])
        best = min(best, time.perf_counter() - t0)
    assert len(rec.vocabulary) > 2000
    assert best < 0.2, f"set_context took {best * 1000:.0f} ms"
    text_heard, _ = hear(rec, "what is the refund policy")  # still decodes
    assert isinstance(text_heard, str)


def test_normalize_spells_numbers_and_splits_sentences() -> None:
    assert normalize("A sword costs 30 gold. Really?  Yes, 1,250! The 3rd is 2.5 miles") == [
        ["a", "sword", "costs", "thirty", "gold"],
        ["really"],
        ["yes", "one", "thousand", "two", "hundred", "fifty"],
        ["the", "third", "is", "two", "point", "five", "miles"],
    ]
    assert normalize("Bram\u2019s café & inn") == [["bram's", "cafe", "and", "inn"]]
    assert number_words(0) == ["zero"]
    assert number_words(1250) == ["one", "thousand", "two", "hundred", "fifty"]
    assert number_words(2_000_019) == ["two", "million", "nineteen"]
    assert ordinal_words(21) == ["twenty", "first"]
    assert ordinal_words(40) == ["fortieth"]
    assert ordinal_words(12) == ["twelfth"]


def test_compound_phones_joins_dictionary_words() -> None:
    lex = lexicon()
    assert compound_phones("oakvale", lex) == f"{lex['oak'][0]} {lex['vale'][0]}"
    assert compound_phones("zzzzzzzz", lex) is None
    assert compound_phones("abc", lex) is None


def _parse_arpa(text: str) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], float]]:
    uni: dict[str, tuple[float, float]] = {}
    bi: dict[tuple[str, str], float] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("\\"):
            section = line
            continue
        parts = line.split()
        if section == "\\1-grams:" and parts:
            uni[parts[1]] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
        elif section == "\\2-grams:" and parts:
            bi[(parts[1], parts[2])] = float(parts[0])
    return uni, bi


def test_arpa_model_is_a_proper_distribution() -> None:
    arpa = build_arpa(
        [(s, 1.0) for s in normalize("\n".join(GENERIC_CORPUS[:40]))]
        + [(["how", "much", "is", "the", "sword"], 3.0)]
    )
    uni, bi = _parse_arpa(arpa)
    vocab = [w for w in uni if w != "<s>"]
    assert math.isclose(sum(10 ** uni[w][0] for w in vocab), 1.0, rel_tol=1e-3)
    for h in ("<s>", "how", "the", "sword"):
        total = 0.0
        for w in vocab:
            if (h, w) in bi:
                total += 10 ** bi[(h, w)]
            else:
                total += 10 ** (uni[h][1] + uni[w][0])
        assert math.isclose(total, 1.0, rel_tol=1e-3), (h, total)
    # What was seen is likelier than what was not.
    assert bi[("the", "sword")] > uni["the"][1] + uni["hello"][0]


def test_frames_count_like_the_sentences_they_stand_for() -> None:
    a, b = NgramCounts(), NgramCounts()
    a.add_frame("how much is the {}", [("long", "sword"), ("axe",)], 0.5)
    b.add(["how", "much", "is", "the", "long", "sword"], 0.5)
    b.add(["how", "much", "is", "the", "axe"], 0.5)
    assert a.unigrams == b.unigrams
    assert a.bigrams == b.bigrams


def test_the_same_context_is_not_rebuilt(biased: PocketSphinxRecognizer) -> None:
    decoder = biased._context
    biased.set_context([SITUATION, PROFILE])
    assert biased._context is decoder
    biased.set_context([SITUATION])
    assert biased._context is not decoder
