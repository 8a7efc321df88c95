"""LlmBrain against a local fake of the OpenAI chat-completions wire protocol, and the
SentenceSplitter that turns its token stream into sentences for speech."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from parleyd.domain.session import SceneItem
from parleyd.engine.interfaces import Persona, Turn, UserInput
from parleyd.engine.llm_brain import (
    BrainUnavailable,
    LlmBrain,
    LlmSettings,
    SseParser,
    brain_for,
    build_messages,
    estimate_tokens,
)
from parleyd.engine.offline_brain import OfflineBrain
from parleyd.engine.sentences import SentenceSplitter, sentences, split_sentences

from .fake_llm import DEFAULT_PIECES, FakeLlm, Mode

TIMEOUT_S = 0.5

PERSONA = Persona(
    agent_id="brom",
    profile="shopkeeper",
    situation="You are Brom, the blacksmith of Oakvale. A sword costs 20 gold.",
    dynamic_info="Swords are on sale today for 15 gold.",
    scene=(SceneItem("anvil", "a heavy iron anvil"), SceneItem("bellows")),
    summary="The user asked about shields earlier and bought one.",
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlm]:
    async with FakeLlm(api_key="sk-test") as server:
        yield server


@pytest.fixture
async def brain(fake: FakeLlm) -> AsyncIterator[LlmBrain]:
    b = LlmBrain(fake.base_url, "fake-model", "sk-test", timeout_s=TIMEOUT_S)
    yield b
    await b.aclose()


async def collect(brain: LlmBrain, said: UserInput, history: list[Turn] | None = None) -> list[str]:
    return [piece async for piece in brain.reply(PERSONA, history or [], said)]


# -- streaming and the request ----------------------------------------------------------------


async def test_streams_pieces_in_order_as_they_arrive(fake: FakeLlm, brain: LlmBrain) -> None:
    fake.hold_after_first = asyncio.Event()
    stream = brain.reply(PERSONA, [], UserInput(text="How much is a sword?"))
    # The first piece arrives while the server still holds back the rest: really streamed.
    first = await asyncio.wait_for(anext(stream), 2)
    assert first == DEFAULT_PIECES[0]
    fake.hold_after_first.set()
    rest = [piece async for piece in stream]
    assert [first, *rest] == list(DEFAULT_PIECES)


async def test_request_is_an_openai_streaming_chat_completion(
    fake: FakeLlm, brain: LlmBrain
) -> None:
    history = [Turn("user", "Hi"), Turn("agent", "Welcome!"), Turn("user", "How much is a sword?")]
    await collect(brain, UserInput(text="How much is a sword?"), history)
    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"].startswith("application/json")
    assert request.body["model"] == "fake-model"
    assert request.body["stream"] is True
    prompt = request.system_prompt
    assert "You are Brom, the blacksmith of Oakvale." in prompt
    assert "shopkeeper" in prompt
    assert "Swords are on sale today for 15 gold." in prompt
    assert "- anvil: a heavy iron anvil" in prompt
    assert "- bellows" in prompt
    assert "bought one" in prompt  # the summary
    roles = [(m["role"], m["content"]) for m in request.messages[1:]]
    # The engine already put the user's turn in the history: it is sent once, last.
    assert roles == [
        ("user", "Hi"),
        ("assistant", "Welcome!"),
        ("user", "How much is a sword?"),
    ]


async def test_history_is_truncated_newest_first_with_the_summary_standing_in(
    fake: FakeLlm,
) -> None:
    budget = 300
    brain = LlmBrain(fake.base_url, "m", "sk-test", timeout_s=TIMEOUT_S, max_history_tokens=budget)
    history = []
    for i in range(40):
        history.append(Turn("user", f"question {i:02d} " + "x" * 150))
        history.append(Turn("agent", f"answer {i:02d} " + "y" * 150))
    try:
        await collect(brain, UserInput(text="And now?"), history)
    finally:
        await brain.aclose()
    messages = fake.requests[0].messages
    sent = "\n".join(m["content"] for m in messages[1:])
    assert "answer 39" in sent  # the newest turns are there
    assert "question 39" in sent
    assert "question 00" not in sent  # the oldest are not
    assert "answer 30" not in sent
    assert messages[-1] == {"role": "user", "content": "And now?"}
    history_tokens = sum(estimate_tokens(m["content"]) for m in messages[1:-1])
    assert 0 < history_tokens <= budget
    assert "Summary of the earlier conversation" in messages[0]["content"]
    assert PERSONA.summary in messages[0]["content"]


def test_without_a_summary_the_prompt_says_turns_were_left_out() -> None:
    persona = Persona(agent_id="a", situation="You are Ann.")
    history = [Turn("user", "z" * 400) for _ in range(10)]
    messages = build_messages(persona, history, UserInput(text="hi"), max_history_tokens=250)
    assert "earlier turns of this conversation are not shown" in messages[0]["content"]
    # Consecutive user turns are merged: roles alternate, as strict chat templates want.
    assert [m["role"] for m in messages] == ["system", "user"]


async def test_trigger_becomes_an_event_note_and_opening_asks_for_a_greeting(
    fake: FakeLlm, brain: LlmBrain
) -> None:
    await collect(brain, UserInput(trigger="player_entered", payload={"name": "Ana", "hp": 10}))
    assert fake.requests[-1].messages[-1] == {
        "role": "user",
        "content": '[event] player_entered {"hp": 10, "name": "Ana"}',
    }
    await collect(brain, UserInput(opening=True))
    last = fake.requests[-1].messages[-1]
    assert last["role"] == "user"
    assert last["content"].startswith("[event]")
    assert "Greet" in last["content"]
    assert "[event]" in fake.requests[-1].system_prompt  # the model is told what events are


async def test_metadata_greeting_is_said_verbatim_without_a_call(
    fake: FakeLlm, brain: LlmBrain
) -> None:
    persona = Persona(agent_id="a", metadata={"greeting": "Hail, traveller!"})
    pieces = [p async for p in brain.reply(persona, [], UserInput(opening=True))]
    assert pieces == ["Hail, traveller!"]
    assert fake.requests == []


async def test_empty_input_makes_no_call(fake: FakeLlm, brain: LlmBrain) -> None:
    assert await collect(brain, UserInput(text="  ")) == []
    assert fake.requests == []


async def test_summarize_asks_for_two_sentences(fake: FakeLlm, brain: LlmBrain) -> None:
    fake.pieces = ["The user", " asked about swords.", " Brom quoted 20 gold."]
    history = [Turn("user", "How much is a sword?"), Turn("agent", "Twenty gold.")]
    summary = await brain.summarize(PERSONA, history)
    assert summary == "The user asked about swords. Brom quoted 20 gold."
    request = fake.requests[-1]
    asked = request.messages[-1]["content"]
    assert "two sentences" in asked
    assert "User: How much is a sword?" in asked
    assert "Character: Twenty gold." in asked
    assert PERSONA.summary in asked  # the previous summary is folded in


async def test_a_server_ignoring_stream_true_still_works(fake: FakeLlm, brain: LlmBrain) -> None:
    fake.mode = Mode.NON_STREAMING
    assert "".join(await collect(brain, UserInput(text="hi"))) == "".join(DEFAULT_PIECES)


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason_part"),
    [
        (Mode.HTTP_500, "HTTP 500"),
        (Mode.UNAUTHORIZED, "HTTP 401"),
        (Mode.SILENT, "did not answer"),
        (Mode.STALL, "stalled"),
        (Mode.STALL_MID, "stalled"),
        (Mode.DISCONNECT, "connection"),
        (Mode.MALFORMED, "malformed"),
    ],
)
async def test_failure_raises_brain_unavailable_in_time_then_recovers(
    fake: FakeLlm, brain: LlmBrain, mode: Mode, reason_part: str
) -> None:
    fake.fail_next(mode)
    started = time.monotonic()
    with pytest.raises(BrainUnavailable) as caught:
        await asyncio.wait_for(collect(brain, UserInput(text="hi")), 5)
    # Bounded by the 0.5 s timeout (a few waits at most), not by the 20 s default; generous
    # for a loaded machine.
    assert time.monotonic() - started < 3.0
    assert reason_part in caught.value.reason
    # The next call works again, on the same brain.
    assert "".join(await collect(brain, UserInput(text="hi again"))) == "".join(DEFAULT_PIECES)


async def test_http_error_carries_status_and_the_servers_message(
    fake: FakeLlm, brain: LlmBrain
) -> None:
    fake.fail_next(Mode.HTTP_500)
    with pytest.raises(BrainUnavailable) as caught:
        await collect(brain, UserInput(text="hi"))
    assert caught.value.status == 500
    assert "The server had an error while processing your request." in caught.value.reason


async def test_wrong_api_key_is_refused(fake: FakeLlm) -> None:
    brain = LlmBrain(fake.base_url, "m", "sk-wrong", timeout_s=TIMEOUT_S)
    try:
        with pytest.raises(BrainUnavailable) as caught:
            await collect(brain, UserInput(text="hi"))
    finally:
        await brain.aclose()
    assert caught.value.status == 401
    assert "Incorrect API key" in caught.value.reason


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    brain = LlmBrain(f"http://127.0.0.1:{port}/v1", "m", "k", timeout_s=TIMEOUT_S)
    started = time.monotonic()
    try:
        with pytest.raises(BrainUnavailable) as caught:
            await collect(brain, UserInput(text="hi"))
    finally:
        await brain.aclose()
    assert time.monotonic() - started < 3.0
    assert "cannot connect" in caught.value.reason


async def test_summarize_failure_raises_brain_unavailable(fake: FakeLlm, brain: LlmBrain) -> None:
    fake.fail_next(Mode.STALL)
    with pytest.raises(BrainUnavailable):
        await brain.summarize(PERSONA, [Turn("user", "hello")])


def test_sse_parser_follows_the_event_stream_rules() -> None:
    parser = SseParser()
    out: list[str] = []
    for line in [
        ": keep-alive comment",
        "event: message",
        "id: 1",
        'data:{"choices":[{"delta":{"content":"no space"}}]}',  # "data:" without the space
        "",
        'data: {"choices":',  # one event over two data lines
        'data: [{"delta":{"content":" two lines"}}]}',
        "",
        'data: {"choices":[{"delta":{"content":"!"}}]}',  # no blank line between events
        'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}',
        'data: {"choices":[],"usage":{"total_tokens":3}}',  # a usage chunk
        "data: [DONE]",
    ]:
        out += parser.feed_line(line)
    out += parser.close()
    assert out == ["no space", " two lines", "!"]
    assert parser.done


@pytest.mark.parametrize(
    "lines",
    [
        ["data: {not json", ""],
        ['data: {"object": "chat.completion.chunk"}', ""],  # no choices
        ['data: {"error": {"message": "overloaded"}}', ""],
        ['data: {"choices":[{"delta":{"content":"cut"}}]}'],  # ends without [DONE]
    ],
)
def test_sse_parser_rejects_broken_streams(lines: list[str]) -> None:
    parser = SseParser()

    def run() -> None:
        for line in lines:
            parser.feed_line(line)
        parser.close()

    with pytest.raises(BrainUnavailable):
        run()


def test_brain_for_settings() -> None:
    assert isinstance(brain_for(LlmSettings()), OfflineBrain)
    assert isinstance(brain_for(LlmSettings(base_url="  ")), OfflineBrain)
    brain = brain_for(
        LlmSettings(
            base_url="http://127.0.0.1:8080/v1/",
            model="llama-3",
            api_key="sk-x",
            timeout_s=7.5,
            max_history_tokens=512,
        )
    )
    assert isinstance(brain, LlmBrain)
    assert brain.url == "http://127.0.0.1:8080/v1/chat/completions"
    assert (brain.model, brain.api_key, brain.timeout_s) == ("llama-3", "sk-x", 7.5)
    assert brain.max_history_tokens == 512


async def test_llm_pieces_through_the_splitter_become_sentences(
    fake: FakeLlm, brain: LlmBrain
) -> None:
    fake.pieces = ["Hel", "lo, Mr", ". Smith", "! It costs 3", ".5 go", "ld. Wait", "..."]
    said = UserInput(text="hi")
    got = [s async for s in sentences(brain.reply(PERSONA, [], said))]
    assert got == ["Hello, Mr. Smith!", "It costs 3.5 gold.", "Wait..."]


# -- SentenceSplitter -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Mr. Smith and Dr. Jones met Mrs. Lee.", ["Mr. Smith and Dr. Jones met Mrs. Lee."]),
        ("Bring tools, e.g. a hammer. Then go.", ["Bring tools, e.g. a hammer.", "Then go."]),
        ("That is, i.e. the big one. Yes.", ["That is, i.e. the big one.", "Yes."]),
        ("It costs 3.5 gold. Cheap!", ["It costs 3.5 gold.", "Cheap!"]),
        ("Well... maybe not. Fine.", ["Well... maybe not.", "Fine."]),
        ("Well… maybe. Sure… Go on.", ["Well… maybe.", "Sure…", "Go on."]),
        ("Wait... What?! No way.", ["Wait...", "What?!", "No way."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("(Really.) Yes.", ["(Really.)", "Yes."]),
        ("Line one\nLine two\n\nLine three", ["Line one", "Line two", "Line three"]),
        (
            "Visit example.com today. J. R. R. Tolkien wrote it.",
            ["Visit example.com today.", "J. R. R. Tolkien wrote it."],
        ),
        ("I did it. I won.", ["I did it.", "I won."]),
        ("\u4f60\u597d\u3002\u518d\u89c1\uff01", ["\u4f60\u597d\u3002", "\u518d\u89c1\uff01"]),
        ("", []),
        ("   ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Hello there. Mr. Smith paid 3.5 gold, e.g. a bargain! Well... maybe not? Bye.\nNext line",
        "The sword… costs 20. The shield costs 15!",
    ],
)
def test_streaming_char_by_char_equals_whole_text(text: str) -> None:
    splitter = SentenceSplitter()
    streamed: list[str] = []
    for ch in text:
        streamed += splitter.feed(ch)
    streamed += splitter.flush()
    assert streamed == split_sentences(text)


def test_splitter_releases_a_sentence_as_soon_as_the_next_word_starts() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("It is ready.") == []  # "." could be "Mr." or "3.5": wait
    assert splitter.feed(" ") == []
    assert splitter.push("T") == ["It is ready."]
    assert splitter.feed("ake it") == []
    assert splitter.pending == "Take it"
    assert splitter.flush() == ["Take it"]
    assert splitter.flush() == []
    assert splitter.feed("Done? ") == ["Done?"]  # "?" needs no look at the next word
