"""The built-in engine's package data: the offline brain's phrasebook (data/offline_brain.toml)
and the recogniser's generic corpus (data/asr_corpus.toml) parse into what their loaders expect,
and what the engine says or hears comes from those files, not from copies in the code."""

from __future__ import annotations

import dataclasses
import string
import tomllib
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import pytest

from parleyd.engine import asr
from parleyd.engine.asr import Corpus, PocketSphinxRecognizer, normalize, parse_corpus
from parleyd.engine.interfaces import Persona, Turn, UserInput
from parleyd.engine.offline_brain import (
    GENERIC_REACTION,
    PHRASEBOOK,
    OfflineBrain,
    Tone,
    parse_phrasebook,
    tone_of,
)


def _data_text(name: str) -> str:
    return resources.files("parleyd.engine").joinpath("data", name).read_text("utf-8")


BRAIN_TEXT = _data_text("offline_brain.toml")
CORPUS_TEXT = _data_text("asr_corpus.toml")
BRAIN_DATA: dict[str, Any] = tomllib.loads(BRAIN_TEXT)
CORPUS_DATA: dict[str, Any] = tomllib.loads(CORPUS_TEXT)

# The phrase banks the brain reads from a tone: every field of `Tone` but these.
BANKS = [f.name for f in dataclasses.fields(Tone) if f.name not in {"name", "role", "reactions"}]
# Where the brain skips an empty line: anywhere else "" would be spoken as an empty sentence.
MAY_BE_EMPTY = {"openers", "hedges", "unknown_followups"}


def _placeholders(line: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(line) if field is not None}


def _compose(brain: OfflineBrain, persona: Persona, said: UserInput, turns: int = 0) -> str:
    history = [Turn(role="user", text="hi")] * turns
    return " ".join(brain.compose(persona, history, said))


async def _reply(brain: OfflineBrain, persona: Persona, said: UserInput) -> str:
    return "".join([piece async for piece in brain.reply(persona, [], said)])


# -- offline_brain.toml: its shape ---------------------------------------------------------------


def test_every_tone_has_every_bank_the_brain_reads() -> None:
    tones = BRAIN_DATA["tones"]
    assert {"default", "shopkeeper", "interviewer", "tutor", "support", "guard"} <= set(tones)
    kinds = {entry["kind"] for entry in BRAIN_DATA["trigger_kinds"]} | {GENERIC_REACTION}
    for name, tone in tones.items():
        assert isinstance(tone["role"], str), name
        assert set(tone) == {"role", "reactions", *BANKS}, name
        for bank in BANKS:
            lines = tone[bank]
            assert isinstance(lines, list), (name, bank)
            assert lines, (name, bank)
            assert all(isinstance(line, str) for line in lines), (name, bank)
            if bank not in MAY_BE_EMPTY:
                assert all(lines), (name, bank)
            allowed = {"name"} if bank == "greetings" else set()
            assert all(_placeholders(line) <= allowed for line in lines), (name, bank)
        assert set(tone["reactions"]) == kinds, name
        for kind, lines in tone["reactions"].items():
            assert lines, (name, kind)
            assert all(isinstance(line, str) and line for line in lines), (name, kind)
            assert all(_placeholders(line) <= {"who", "item", "event"} for line in lines)


def test_keyword_and_trigger_tables_are_lists_of_known_names() -> None:
    tone_keywords = BRAIN_DATA["tone_keywords"]
    named = [entry["tone"] for entry in tone_keywords]
    assert len(set(named)) == len(named)
    assert set(named) == set(BRAIN_DATA["tones"]) - {"default"}  # every tone can be guessed
    for entry in tone_keywords:
        assert entry["keywords"]
        assert all(isinstance(k, str) and k == k.lower() for k in entry["keywords"])
    # Keywords match inside the padded lowercased text: the space keeps "hr" out of "three".
    assert "hr " in next(e["keywords"] for e in tone_keywords if e["tone"] == "interviewer")
    kinds = [entry["kind"] for entry in BRAIN_DATA["trigger_kinds"]]
    assert len(set(kinds)) == len(kinds)
    assert GENERIC_REACTION not in kinds
    for entry in BRAIN_DATA["trigger_kinds"]:
        assert entry["words"]
        # Trigger names are split into lowercase words before they are looked up.
        assert all(isinstance(w, str) and w.isalnum() and w == w.lower() for w in entry["words"])


def test_the_loaded_phrasebook_is_the_file() -> None:
    for name, data in BRAIN_DATA["tones"].items():
        tone = PHRASEBOOK.tones[name]
        assert tone.name == name
        assert tone.role == data["role"]
        for bank in BANKS:
            assert getattr(tone, bank) == tuple(data[bank])
        assert dict(tone.reactions) == {k: tuple(v) for k, v in data["reactions"].items()}
    assert PHRASEBOOK.tone_keywords == tuple(
        (e["tone"], tuple(e["keywords"])) for e in BRAIN_DATA["tone_keywords"]
    )
    assert PHRASEBOOK.trigger_kinds == tuple(
        (e["kind"], frozenset(e["words"])) for e in BRAIN_DATA["trigger_kinds"]
    )


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('hello = ["Hmph. Hello.", "Citizen."]\n', "", "tones.guard"),  # a bank missing
        ("\"Hello! I'm {name}.", "\"Hello! I'm {nam}.", "greetings"),  # an unknown placeholder
        ("\"Hello! I'm {name}.", "\"Hello! I'm {name.", "greetings"),  # a stray brace
        ('clarify = ["Speak up, citizen.",', 'clarify = ["",', "clarify"),  # "" where it's spoken
        ('generic = ["Hm. {event}.', 'generik = ["Hm. {event}.', "tones.guard"),  # a reaction
        ('tone = "tutor"', 'tone = "teacher"', "tone_keywords.tone"),  # no such tone
        ("tones.default", "tones.plain", "tones.default"),  # no default tone
        ('acks = ["Aye.", "Hmph.", "Understood."]', "acks = []", "acks"),  # an empty bank
        ('acks = ["Aye.", "Hmph.", "Understood."]', 'acks = ["Aye.", 3]', "acks"),
    ],
)
def test_malformed_phrasebook_fails_naming_the_key(old: str, new: str, named: str) -> None:
    assert old in BRAIN_TEXT
    with pytest.raises(ValueError, match=named):
        parse_phrasebook(BRAIN_TEXT.replace(old, new))


# -- offline_brain.toml: it is what the brain says -----------------------------------------------

GUARD = Persona(agent_id="npc-ana", profile="guard", situation="You are Ana of the north gate.")


def test_greetings_come_from_the_file() -> None:
    greetings = {g.format(name="Ana") for g in BRAIN_DATA["tones"]["guard"]["greetings"]}
    said = [_compose(OfflineBrain(), GUARD, UserInput(opening=True), n) for n in range(8)]
    assert set(said) <= greetings
    assert len(set(said)) > 1  # the turn number picks among the file's lines


async def test_reactions_come_from_the_file() -> None:
    brain = OfflineBrain()
    alarm = await _reply(brain, GUARD, UserInput(trigger="PlayerAttacked"))
    assert alarm in BRAIN_DATA["tones"]["guard"]["reactions"]["alarm"]
    gift = await _reply(brain, GUARD, UserInput(trigger="ItemGiven", payload={"item": "ruby"}))
    assert gift in {
        g.format(item="the ruby") for g in BRAIN_DATA["tones"]["guard"]["reactions"]["gift"]
    }


def test_an_edited_phrase_is_what_gets_said() -> None:
    edited = BRAIN_TEXT.replace(
        '"Hmph. Thank you for {item}, I suppose."', '"Zounds, {item}{who}! Much obliged."', 1
    )
    brain = OfflineBrain(parse_phrasebook(edited))
    said = UserInput(trigger="ItemGiven", payload={"item": "ruby", "name": "Bo"})
    assert _compose(brain, GUARD, said) == "Zounds, the ruby, Bo! Much obliged."
    assert _compose(OfflineBrain(), GUARD, said) == "Hmph. Thank you for the ruby, I suppose."


def test_tone_keywords_and_trigger_words_come_from_the_file() -> None:
    wizard = Persona(agent_id="npc-zed", situation="You are Zed, a wizard of the tower.")
    assert tone_of(wizard).name == "default"
    edited = BRAIN_TEXT.replace('keywords = ["tutor", ', 'keywords = ["wizard", "tutor", ', 1)
    edited = edited.replace('"killed", "ambush",', '"killed", "ambush", "sneezed",', 1)
    book = parse_phrasebook(edited)
    assert tone_of(wizard, book).name == "tutor"
    sneeze = UserInput(trigger="DragonSneezed")
    alarms = set(BRAIN_DATA["tones"]["tutor"]["reactions"]["alarm"])
    assert _compose(OfflineBrain(book), wizard, sneeze) in alarms
    assert _compose(OfflineBrain(), wizard, sneeze) not in alarms  # stock data: a generic event


async def test_small_talk_comes_from_the_file() -> None:
    answer = await _reply(OfflineBrain(), GUARD, UserInput(text="How are you?"))
    assert answer in BRAIN_DATA["tones"]["guard"]["how_are_you"]


# -- asr_corpus.toml: its shape -------------------------------------------------------------------


def _sentences(data: dict[str, Any]) -> list[str]:
    return [s for section in data["sentences"].values() for s in section]


def test_the_corpus_file_has_non_empty_sections_of_normalized_sentences() -> None:
    sections = CORPUS_DATA["sentences"]
    assert len(sections) >= 5
    for name, lines in sections.items():
        assert isinstance(lines, list), name
        assert lines, name
        for line in lines:
            # Written as `normalize` leaves text, so the file reads as the model is trained.
            assert normalize(line) == [line.split()], (name, line)
    sentences = _sentences(CORPUS_DATA)
    assert len(set(sentences)) == len(sentences)  # a repeat would silently weigh double
    frames = CORPUS_DATA["frames"]
    assert frames
    for frame in frames:
        assert frame.endswith(" {}")
        assert frame.count("{") == frame.count("}") == 1
        assert normalize(frame[:-3]) == [frame[:-3].split()]


def test_the_loaded_corpus_is_the_file() -> None:
    in_file = Corpus(tuple(_sentences(CORPUS_DATA)), tuple(CORPUS_DATA["frames"]))
    assert in_file == asr.CORPUS
    assert asr.CORPUS.sentences == asr.GENERIC_CORPUS


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('    "i want the {}",\n', '    "{} is what i want",\n', "frame"),  # slot not last
        ('    "i want the {}",\n', '    "i want the {} {}",\n', "frame"),  # two slots
        ("frames = [", "framez = [", "frames"),
        ("[sentences]", "[sentence]", "sentences"),
        ('    "hello",\n    "hi",\n', '    "hello",\n    " ",\n', "sentences.greetings"),
    ],
)
def test_malformed_corpus_fails_naming_the_key(old: str, new: str, named: str) -> None:
    assert old in CORPUS_TEXT
    with pytest.raises(ValueError, match=named):
        parse_corpus(CORPUS_TEXT.replace(old, new, 1))


# -- asr_corpus.toml: it is what the model is trained on -------------------------------------------


@pytest.fixture
def fresh_generic_counts() -> Iterator[None]:
    """The generic counts are cached per process: rebuilt around a test that changes the corpus."""
    asr._generic_counts.cache_clear()
    yield
    asr._generic_counts.cache_clear()


def _words(sentences: Sequence[str]) -> set[str]:
    return {w for s in sentences for w in s.split()}


def test_the_generic_model_holds_exactly_the_files_words() -> None:
    counts = asr.training_counts([], 3.0, lambda _: True)
    assert counts.vocabulary == _words(_sentences(CORPUS_DATA))


def test_a_changed_corpus_changes_the_model(
    monkeypatch: pytest.MonkeyPatch, fresh_generic_counts: None
) -> None:
    corpus = Corpus(("zebra crossing ahead",), ("sing me the {}",))
    monkeypatch.setattr(asr, "GENERIC_CORPUS", corpus.sentences)
    monkeypatch.setattr(asr, "CORPUS", corpus)
    counts = asr.training_counts([["the", "lantern"]], 3.0, lambda _: True)
    assert counts.vocabulary == {"zebra", "crossing", "ahead", "sing", "me", "the", "lantern"}
    assert counts.bigrams["<s>"]["sing"] == pytest.approx(asr.FRAME_WEIGHT)


def test_the_recogniser_context_holds_corpus_words_the_session_never_says() -> None:
    rec = PocketSphinxRecognizer()
    rec.set_context(["You are Brom, the blacksmith. You sell swords."])
    trade = set(CORPUS_DATA["sentences"]["trade"])
    assert "can you give me a discount" in trade
    assert {"discount", "cheaper", "expensive"} <= rec.vocabulary
    session = {"you", "are", "brom", "the", "blacksmith", "sell", "swords", "sword"}
    frames = _words([f[:-3] for f in CORPUS_DATA["frames"]])
    assert rec.vocabulary <= _words(_sentences(CORPUS_DATA)) | session | frames
