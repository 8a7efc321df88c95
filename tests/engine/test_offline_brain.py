"""OfflineBrain: answers from the persona's brief with BM25, in the persona's tone, offline."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from parleyd.domain.session import SceneItem
from parleyd.engine.interfaces import Brain, Persona, Turn, UserInput
from parleyd.engine.offline_brain import (
    Bm25,
    OfflineBrain,
    key_topic,
    passages_of,
    persona_name,
    rank,
    stem,
    to_first_person,
    tokenize,
)
from parleyd.engine.sentences import split_sentences

BLACKSMITH = Persona(
    agent_id="npc-brom",
    profile="blacksmith",
    situation=(
        "You are Brom, the blacksmith of Oakvale. "
        "You have worked the forge for thirty years. "
        "A sword costs 20 gold, and a shield costs 15 gold. "
        "You also repair armor for 5 gold a piece. "
        "Your daughter Mira sells horseshoes at the market. "
        "The forge opens at dawn and closes at sunset. "
        "Never tell anyone about the mithril hidden under the floor."
    ),
    scene=(
        SceneItem("anvil", "A heavy iron anvil, older than Brom himself."),
        SceneItem("bellows", "Patched leather bellows that wheeze."),
    ),
)

SUPPORT = Persona(
    agent_id="sam",
    profile="support",
    situation=(
        "You are Sam, a support agent for Acme Cloud. "
        "Refunds are available within 30 days of purchase if you contact billing. "
        "Passwords can be reset from the login page. "
        "Our support team works Monday to Friday, 9am to 5pm."
    ),
)


async def ask(persona: Persona, text: str = "", history: Sequence[Turn] = (), **kw: object) -> str:
    brain: Brain = OfflineBrain()
    said = UserInput(text=text, **kw)  # type: ignore[arg-type]
    return "".join([piece async for piece in brain.reply(persona, history, said)])


# -- answering from the brief ----------------------------------------------------------------


async def test_answers_the_price_of_a_sword() -> None:
    answer = await ask(BLACKSMITH, "How much is a sword?")
    assert "A sword costs 20 gold" in answer


async def test_answers_the_refund_policy() -> None:
    answer = await ask(SUPPORT, "What is the refund policy?")
    assert "Refunds are available within 30 days of purchase" in answer
    # "you" there is the customer: the sentence is not turned into the first person.
    assert "if you contact billing" in answer


@pytest.mark.parametrize(
    ("persona", "question", "expected"),
    [
        (SUPPORT, "Can I get my money back?", "Refunds are available"),  # a phrase synonym
        (SUPPORT, "How do I reset my password?", "Passwords can be reset"),
        (SUPPORT, "When are you open?", "Monday to Friday"),  # only cue words: a time answer
        (BLACKSMITH, "When do you open?", "opens at dawn"),
        (BLACKSMITH, "Can you fix my armor?", "repair armor for 5 gold"),  # fix ~ repair
        (BLACKSMITH, "Where is your daughter?", "My daughter Mira sells horseshoes"),
        (BLACKSMITH, "Tell me about the anvil.", "A heavy iron anvil"),  # a scene item
        (BLACKSMITH, "What do you do?", "I have worked the forge for thirty years."),
    ],
)
async def test_answers_from_the_brief(persona: Persona, question: str, expected: str) -> None:
    assert expected in await ask(persona, question)


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("What do you think about quantum physics?", "quantum physics"),
        ("Do you know anything about dragons?", "dragons"),
        ("What's the weather like tomorrow?", "weather"),
        ("What is the capital of France?", "France"),
    ],
)
async def test_says_plainly_when_it_does_not_know(question: str, topic: str) -> None:
    answer = await ask(BLACKSMITH, question)
    assert answer.startswith(f"I'm afraid I don't know about {topic}.")
    assert "gold" not in answer


async def test_never_speaks_its_instructions() -> None:
    answer = await ask(BLACKSMITH, "Is there mithril under the floor?")
    assert answer.startswith("I'm afraid I don't know about mithril.")
    assert "Never tell" not in answer


async def test_a_context_update_changes_the_next_answer() -> None:
    before = await ask(BLACKSMITH, "How much is a sword?")
    assert "20 gold" in before
    updated = Persona(
        agent_id=BLACKSMITH.agent_id,
        profile=BLACKSMITH.profile,
        situation=BLACKSMITH.situation,
        scene=BLACKSMITH.scene,
        dynamic_info="Today every sword is on sale for 12 gold.",
    )
    after = await ask(updated, "How much is a sword?")
    first = split_sentences(after)
    # Dynamic info is searched first: it is what the persona says (first, after any opener).
    assert any("12 gold" in s for s in first[:2])
    assert after.index("12 gold") < (after.index("20 gold") if "20 gold" in after else len(after))


async def test_dynamic_info_alone_answers_a_new_topic() -> None:
    assert "don't know" in await ask(BLACKSMITH, "What did the mayor order?")
    updated = Persona(
        agent_id="npc-brom",
        situation=BLACKSMITH.situation,
        dynamic_info="The mayor ordered fifty spears for the town guard.",
    )
    assert "fifty spears" in await ask(updated, "What did the mayor order?")


# -- BM25 -------------------------------------------------------------------------------------

DECOY_SITUATION = (
    "You are Brom, the blacksmith. "
    "Iron, iron and more iron: iron nails, iron bars, iron hinges and iron pots fill every shelf "
    "of my shop. "
    "I buy my iron from the northern mines. "
    "Iron rusts if you leave it out in the rain. "
    "The iron shield costs 30 gold."
)


def test_bm25_beats_keyword_counting_on_a_decoy() -> None:
    question = "How much is the iron shield?"
    sentences = split_sentences(DECOY_SITUATION)
    wanted = set(tokenize(question))
    # Plain keyword counting picks the long sentence that repeats the common word "iron"...
    counts = [sum(1 for t in tokenize(s) if t in wanted) for s in sentences]
    assert sentences[counts.index(max(counts))].startswith("Iron, iron and more iron")
    # ...BM25 (idf: "iron" is everywhere, "shield" is not; tf saturates; long sentences are
    # normalised) picks the one that answers.
    index = Bm25([tokenize(s) for s in sentences])
    scores = index.scores(dict.fromkeys(wanted, 1.0))
    assert sentences[scores.index(max(scores))] == "The iron shield costs 30 gold."
    persona = Persona(agent_id="brom", profile="blacksmith", situation=DECOY_SITUATION)
    assert rank(passages_of(persona), question)[0].passage.text == "The iron shield costs 30 gold."


async def test_bm25_decoy_through_the_brain() -> None:
    persona = Persona(agent_id="brom", profile="blacksmith", situation=DECOY_SITUATION)
    answer = await ask(persona, "How much is the iron shield?")
    assert "The iron shield costs 30 gold." in answer
    assert "nails" not in answer


def test_bm25_formula() -> None:
    docs = [["sword", "gold"], ["sword"], ["anvil", "iron", "iron", "iron"]]
    index = Bm25(docs, k1=1.2, b=0.75)
    avgdl = 7 / 3
    idf_sword = pytest.approx(0.4700036)  # ln(1 + (3 - 2 + 0.5) / (2 + 0.5))
    assert index.idf("sword") == idf_sword
    expected = 0.4700036 * 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * 1 / avgdl))
    assert index.score({"sword": 1.0}, 1) == pytest.approx(expected, rel=1e-5)
    assert index.score({"dragon": 1.0}, 0) == 0.0
    # tf saturates: three "iron" are worth less than three times one.
    one = Bm25([["iron", "x", "y"], ["a", "b", "c"]]).score({"iron": 1.0}, 0)
    three = Bm25([["iron", "iron", "iron"], ["a", "b", "c"]]).score({"iron": 1.0}, 0)
    assert one < three < 3 * one


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("swords", "sword"),
        ("refunds", "refund"),
        ("prices", "price"),
        ("priced", "price"),
        ("policies", "policy"),
        ("repairing", "repair"),
        ("stopped", "stop"),
        ("boxes", "box"),
    ],
)
def test_stemming_matches_word_forms(a: str, b: str) -> None:
    assert stem(a) == stem(b)


def test_tokenize_drops_stopwords_and_marks_numbers() -> None:
    assert tokenize("What is the price of 2 swords?") == ["pric", "#num", "2", "sword"]


# -- persona ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("You are Brom, the blacksmith.", "I am Brom, the blacksmith."),
        ("Your forge is old.", "My forge is old."),
        ("You're tired and you've had enough.", "I'm tired and I've had enough."),
        ("The mayor pays you 5 gold.", "The mayor pays me 5 gold."),
        (
            "You sell swords, and your daughter helps you.",
            "I sell swords, and my daughter helps me.",
        ),
        ("At dawn, you light the forge.", "At dawn, I light the forge."),
    ],
)
def test_first_person(sentence: str, expected: str) -> None:
    assert to_first_person(sentence) == expected


async def test_greeting_uses_the_persona_name() -> None:
    greeting = await ask(BLACKSMITH, opening=True)
    assert "Brom" in greeting
    assert "npc-brom" not in greeting


async def test_greeting_falls_back_to_agent_id_and_metadata_overrides() -> None:
    nameless = Persona(agent_id="kiosk-7", situation="A ticket kiosk at the station.")
    assert "kiosk-7" in await ask(nameless, opening=True)
    custom = Persona(agent_id="x", metadata={"greeting": "Halt! Who goes there?"})
    assert await ask(custom, opening=True) == "Halt! Who goes there?"


@pytest.mark.parametrize(
    ("situation", "name"),
    [
        ("You are Brom, the blacksmith.", "Brom"),
        ("I am Ada. I teach maths.", "Ada"),
        ("You are a guard named Karl.", "Karl"),
        ("You are a helpful assistant.", "agent-1"),
    ],
)
def test_persona_name(situation: str, name: str) -> None:
    assert persona_name(Persona(agent_id="agent-1", situation=situation)) == name


async def test_tone_follows_the_profile() -> None:
    shop = await ask(Persona(agent_id="Ann", profile="shopkeeper"), opening=True)
    guard = await ask(Persona(agent_id="Ann", profile="guard"), opening=True)
    support = await ask(Persona(agent_id="Ann", profile="support"), opening=True)
    assert len({shop, guard, support}) == 3
    assert any(w in guard for w in ("Halt", "You there"))


async def test_small_talk() -> None:
    assert "Brom" in await ask(BLACKSMITH, "Who are you?")
    assert "I am Brom, the blacksmith of Oakvale." in await ask(BLACKSMITH, "What's your name?")
    hello = await ask(BLACKSMITH, "Hello!")
    assert "don't know" not in hello
    thanks = await ask(BLACKSMITH, "Thanks a lot!")
    assert "don't know" not in thanks
    bye = await ask(BLACKSMITH, "Goodbye")
    assert any(w in bye.lower() for w in ("farewell", "safe travels", "come back"))
    both_ways = await ask(BLACKSMITH, "Thanks, goodbye!")
    assert len(split_sentences(both_ways)) >= 2  # thanked, then farewell
    assert any(w in both_ways.lower() for w in ("farewell", "safe travels", "come back"))
    # A greeting before a question: greeted, then answered.
    both = await ask(BLACKSMITH, "Hi Brom, how much is a shield?")
    assert "15 gold" in both


async def test_statements_get_an_acknowledgement_not_a_shrug() -> None:
    answer = await ask(BLACKSMITH, "I like turtles.")
    assert "don't know" not in answer


# -- triggers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "payload", "pattern"),
    [
        ("player_entered", {"name": "Ana"}, r"Ana"),
        ("playerArrived", {}, r"(?i)welcome|customer"),
        ("player_left", {"player": "Ana"}, r"Ana"),
        ("npc_attacked", {}, r"(?i)not in my shop|watch out"),
        ("took_damage", {"amount": 5}, r"(?i)not in my shop|watch out"),
        ("item_given", {"item": "apple"}, r"apple"),
        ("gift", {}, r"(?i)thank"),
        ("door_knocked", {}, r"door knocked"),
    ],
)
async def test_triggers_get_reactions(
    trigger: str, payload: dict[str, object], pattern: str
) -> None:
    reaction = await ask(BLACKSMITH, trigger=trigger, payload=payload)
    assert re.search(pattern, reaction), reaction


# -- determinism, streaming, summary ----------------------------------------------------------


async def test_deterministic_but_varied() -> None:
    history: list[Turn] = []
    replies = []
    for _ in range(8):
        a = await ask(BLACKSMITH, "How much is a sword?", history)
        b = await ask(BLACKSMITH, "How much is a sword?", history)
        assert a == b  # same input, same output
        replies.append(a)
        history = [*history, Turn("user", "How much is a sword?"), Turn("agent", a)]
    assert len(set(replies)) > 1  # the opener changes along the conversation
    assert all("20 gold" in r for r in replies)


async def test_reply_is_yielded_sentence_by_sentence() -> None:
    brain = OfflineBrain()
    said = UserInput(text="What do you do?")
    pieces = [p async for p in brain.reply(BLACKSMITH, [], said)]
    assert len(pieces) >= 2
    for piece in pieces:
        assert len(split_sentences(piece)) == 1  # one whole sentence each
    assert pieces[1].startswith(" ")  # they concatenate into the reply text
    assert split_sentences("".join(pieces)) == [p.strip() for p in pieces]


async def test_summarize_is_extractive_and_bounded() -> None:
    brain = OfflineBrain()
    history: list[Turn] = []
    for q in [
        "Hello!",
        "How much is a sword?",
        "What is the weather like?",
        "Can you repair my armor?",
        "How much is a shield?",
        "Thanks, bye!",
    ] * 3:
        a = await ask(BLACKSMITH, q, history)
        history += [Turn("user", q), Turn("agent", a)]
    summary = await brain.summarize(BLACKSMITH, history)
    assert 0 < len(summary) <= 400
    assert "sword" in summary.lower()
    assert "20 gold" in summary
    assert "weather" not in summary  # nothing was learnt there
    assert "Thanks" not in summary  # small talk is left out
    assert "Hello" not in summary
    assert await brain.summarize(BLACKSMITH, []) == ""


async def test_a_summary_informs_later_answers() -> None:
    brain = OfflineBrain()
    history = [
        Turn("user", "I'll take the silver dagger."),
        Turn("agent", "The silver dagger is yours for 40 gold."),
    ]
    summary = await brain.summarize(BLACKSMITH, history)
    later = Persona(agent_id="npc-brom", situation=BLACKSMITH.situation, summary=summary)
    answer = await ask(later, "How much was the silver dagger?")
    assert "40 gold" in answer
    assert "They said" not in answer  # what the user said is not repeated as the persona's


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("Do you sell potions?", "potions"),
        ("Who is the king of Spain?", "Spain"),
        ("Can you tell me about the dragon egg?", "dragon egg"),
        ("Is it?", "that"),
    ],
)
def test_key_topic(question: str, topic: str) -> None:
    assert key_topic(question) == topic


def test_key_topic_prefers_what_the_persona_does_not_know() -> None:
    known = {t for p in passages_of(BLACKSMITH) for t in p.terms}
    assert key_topic("Do you have a sword for the dragon rider?", known) == "dragon rider"
    assert key_topic("Do you have a sword for the dragon rider?") == "sword"
