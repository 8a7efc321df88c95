"""A brain backed by any OpenAI-compatible chat-completions endpoint (OpenAI, llama.cpp server,
vLLM, Ollama, LM Studio, LiteLLM, ...), streaming.

Wire protocol: POST {base_url}/chat/completions with {"model", "messages", "stream": true} and
`Authorization: Bearer <key>` (left out when no key is configured); the answer is a
`text/event-stream` of `data: {json}` lines whose `choices[0].delta.content` are the pieces of the
reply, ended by `data: [DONE]`. A server that ignores `stream` and answers one JSON
`chat.completion` is understood too.

Every failure — an HTTP error status, a refused connection, a malformed stream, no answer or a
stream that stalls for longer than `timeout_s`, a connection cut before `[DONE]` — raises
`BrainUnavailable` with a readable reason; nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from parleyd.engine.interfaces import Brain, Persona, Turn, UserInput

CHARS_PER_TOKEN = 4  # the usual rough estimate for English text
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per message
DEFAULT_MODEL = "gpt-4o-mini"
SUMMARY_MAX_CHARS = 600


class BrainUnavailable(Exception):
    """The brain cannot answer now (the LLM endpoint failed, refused or timed out)."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status  # the HTTP status, when the endpoint answered with an error


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS


# --------------------------------------------------------------------------------------------
# Prompt


def system_prompt(persona: Persona) -> str:
    """The persona's brief as a system message: situation, profile, dynamic info, scene and the
    summary of the earlier conversation, each under its own heading when present."""
    parts = [
        "You are a character in a live, spoken conversation. Stay in character at all times. "
        "Answer in one to three short sentences of plain speech: no lists, markdown, emoji or "
        "stage directions, because your words are spoken aloud. Use what you are told below; "
        "when you do not know something, say so in character instead of inventing facts. "
        "A user message starting with [event] is something that happened in the scene, not "
        "words the user said: react to it in character."
    ]
    parts.append(f"Your character id: {persona.agent_id}")
    if persona.situation.strip():
        parts.append(f"Your situation:\n{persona.situation.strip()}")
    if persona.profile.strip():
        parts.append(f"Your profile (role and tone): {persona.profile.strip()}")
    if persona.dynamic_info.strip():
        parts.append(
            "Current information (the freshest; it overrides the above where they differ):\n"
            + persona.dynamic_info.strip()
        )
    scene = [
        f"- {item.name.strip()}: {item.description.strip()}"
        if item.description.strip()
        else f"- {item.name.strip()}"
        for item in persona.scene
        if item.name.strip()
    ]
    if scene:
        parts.append("The scene around you:\n" + "\n".join(scene))
    language = persona.metadata.get("language", "").strip()
    if language:
        parts.append(f"Speak {language}.")
    if persona.summary.strip():
        parts.append(f"Summary of the earlier conversation:\n{persona.summary.strip()}")
    return "\n\n".join(parts)


def _role(turn: Turn) -> tuple[str, str]:
    if turn.role == "agent":
        return "assistant", turn.text
    if turn.role == "user":
        return "user", turn.text
    # Mid-conversation system messages are not accepted by every chat template: as a note.
    return "user", f"[note] {turn.text}"


def recent_history(history: Sequence[Turn], budget_tokens: int) -> tuple[list[Turn], int]:
    """The newest turns that fit in `budget_tokens` (whole turns, in order), and how many older
    turns were left out."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(history):
        if not turn.text.strip():
            continue
        cost = estimate_tokens(turn.text)
        if used + cost > budget_tokens:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    shown = [t for t in history if t.text.strip()]
    return kept, len(shown) - len(kept)


def input_message(said: UserInput) -> str:
    """What the user side says this turn: their words, a trigger note, or the request to greet."""
    if said.opening:
        return (
            "[event] conversation_started: the user just joined. Greet them in character, "
            "in one or two short sentences."
        )
    if said.trigger:
        note = f"[event] {said.trigger}"
        if said.payload:
            note += " " + json.dumps(said.payload, ensure_ascii=False, sort_keys=True, default=str)
        return note
    return said.text.strip()


def build_messages(
    persona: Persona, history: Sequence[Turn], said: UserInput, *, max_history_tokens: int
) -> list[dict[str, str]]:
    """System prompt, the recent history within the token budget (the summary in the system
    prompt stands in for older turns), then this turn's input. The engine puts the user's turn in
    the history before asking for the reply: it is not sent twice."""
    turns = list(history)
    if (
        turns
        and said.text.strip()
        and turns[-1].role == "user"
        and turns[-1].text.strip() == said.text.strip()
    ):
        turns.pop()
    kept, dropped = recent_history(turns, max_history_tokens)
    prompt = system_prompt(persona)
    if dropped and not persona.summary.strip():
        prompt += f"\n\n({dropped} earlier turns of this conversation are not shown.)"
    messages: list[dict[str, str]] = [{"role": "system", "content": prompt}]
    for turn in kept:
        role, content = _role(turn)
        if len(messages) > 1 and messages[-1]["role"] == role:  # keep roles alternating
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    text = input_message(said)
    if messages[-1]["role"] == "user" and len(messages) > 1:
        messages[-1]["content"] += "\n" + text
    else:
        messages.append({"role": "user", "content": text})
    return messages


# --------------------------------------------------------------------------------------------
# Server-sent events


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else its text."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _clip(text) or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or error.get("type")
            if message:
                return _clip(str(message))
        elif isinstance(error, str) and error:
            return _clip(error)
    return _clip(text)


class SseParser:
    """Turns the lines of an OpenAI chat-completions event stream into content pieces.

    Follows the SSE rules (fields `data`, `event`, `id`, `retry`; `:` comments; an event ends at a
    blank line, its data lines joined by newlines) and, for servers that do not separate events
    with blank lines, also takes a `data:` line that is complete JSON on its own as an event."""

    def __init__(self) -> None:
        self.done = False  # `data: [DONE]` seen
        self.finished = False  # a choice with a finish_reason seen
        self._data: list[str] = []

    def feed_line(self, line: str) -> list[str]:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return []
        name, colon, value = line.partition(":")
        if not colon:
            name, value = line, ""
        if value.startswith(" "):
            value = value[1:]
        if name != "data":
            return []  # event, id, retry, or a field nobody defined: ignored, as SSE says
        if not self._data and value.strip() == "[DONE]":
            self.done = True
            return []
        self._data.append(value)
        try:
            event = json.loads("\n".join(self._data))
        except ValueError:
            return []  # maybe continued on the next data line; decided at the blank line
        self._data = []
        return self._pieces(event)

    def close(self) -> list[str]:
        """The end of the stream: the pending event, if any; raises if the stream was cut."""
        pieces = self._dispatch()
        if not (self.done or self.finished):
            raise BrainUnavailable("the stream ended before [DONE]: connection cut mid-reply")
        return pieces

    def _dispatch(self) -> list[str]:
        if not self._data:
            return []
        raw = "\n".join(self._data)
        self._data = []
        if raw.strip() == "[DONE]":
            self.done = True
            return []
        try:
            event = json.loads(raw)
        except ValueError:
            raise BrainUnavailable(
                f"malformed event stream: data is not JSON: {_clip(raw, 80)!r}"
            ) from None
        return self._pieces(event)

    def _pieces(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            raise BrainUnavailable(f"malformed event stream: {_clip(json.dumps(event), 80)}")
        if event.get("error"):
            raise BrainUnavailable(
                f"the LLM reported an error: {_error_message(json.dumps(event).encode())}"
            )
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise BrainUnavailable(
                f"malformed event stream: no choices in {_clip(json.dumps(event), 80)}"
            )
        if not choices:
            return []  # e.g. a final usage chunk
        choice = choices[0]
        if not isinstance(choice, dict):
            raise BrainUnavailable("malformed event stream: a choice is not an object")
        if choice.get("finish_reason"):
            self.finished = True
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message") or {}
        if not isinstance(delta, dict):
            raise BrainUnavailable("malformed event stream: delta is not an object")
        content = delta.get("content")
        if content is None or content == "":
            return []
        if not isinstance(content, str):
            raise BrainUnavailable("malformed event stream: content is not text")
        return [content]


# --------------------------------------------------------------------------------------------
# The brain


def _describe(exc: httpx.HTTPError, url: str, timeout_s: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"cannot connect to {url}: no answer within {timeout_s:g}s"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer within {timeout_s:g}s"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {exc or 'connection refused'}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection to {url} broken: {exc}"
    return f"request to {url} failed: {type(exc).__name__}: {exc}"


class LlmBrain:
    """`Brain` over an OpenAI-compatible chat-completions endpoint, streaming.

    `timeout_s` bounds each wait on the network: connecting, the response headers, and the gap
    between two pieces of the stream. `max_history_tokens` bounds the history sent (estimated at
    ~4 characters a token), newest turns first; the session summary stands in for older ones.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout_s: float = 20.0,
        max_history_tokens: int = 2000,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_history_tokens = max_history_tokens
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _http(self) -> httpx.AsyncClient:
        """One pooled client per event loop (a client cannot cross loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                transport=self._transport,
                headers={"User-Agent": "parleyd"},
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()

    async def reply(
        self, persona: Persona, history: Sequence[Turn], said: UserInput
    ) -> AsyncIterator[str]:
        """The reply's content pieces as the endpoint streams them (tokens, not sentences: feed
        them to a `SentenceSplitter`). A "greeting" in the persona's metadata is said verbatim."""
        if said.opening:
            greeting = persona.metadata.get("greeting", "").strip()
            if greeting and greeting.lower() not in ("on", "true", "1", "yes"):
                yield greeting
                return
        elif not said.trigger and not said.text.strip():
            return
        messages = build_messages(
            persona, history, said, max_history_tokens=self.max_history_tokens
        )
        async for piece in self.complete(messages):
            yield piece

    async def summarize(self, persona: Persona, history: Sequence[Turn]) -> str:
        """Two sentences from the LLM about the conversation (and the previous summary)."""
        kept, _ = recent_history(history, self.max_history_tokens)
        transcript = "\n".join(
            f"{'Character' if t.role == 'agent' else 'User' if t.role == 'user' else 'Note'}: "
            f"{t.text.strip()}"
            for t in kept
        )
        if not transcript and not persona.summary.strip():
            return ""
        request = (
            "Summarize this conversation in at most two sentences, from the character's point "
            "of view. Keep names, facts, numbers, promises and open questions; no preamble.\n\n"
        )
        if persona.summary.strip():
            request += f"Summary of what came before:\n{persona.summary.strip()}\n\n"
        request += f"Conversation:\n{transcript}"
        messages = [
            {"role": "system", "content": "You write short, factual conversation summaries."},
            {"role": "user", "content": request},
        ]
        text = "".join([piece async for piece in self.complete(messages)])
        return _clip(text.strip(), SUMMARY_MAX_CHARS)

    async def complete(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Streams one chat completion for `messages`; raises `BrainUnavailable` on any failure."""
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"model": self.model, "messages": messages, "stream": True}
        client = self._http()
        request = client.build_request("POST", self.url, json=body, headers=headers)
        async with self._network(f"{self.url} did not answer within {self.timeout_s:g}s"):
            response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise BrainUnavailable(
                    f"{self.url} answered HTTP {response.status_code}: "
                    f"{await self._error_body(response)}",
                    status=response.status_code,
                )
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "application/json":
                for piece in await self._whole(response):
                    yield piece
                return
            parser = SseParser()
            lines = response.aiter_lines()
            while not parser.done:
                try:
                    async with self._network(
                        f"the stream from {self.url} stalled for {self.timeout_s:g}s"
                    ):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                for piece in parser.feed_line(line):
                    yield piece
            for piece in parser.close():
                yield piece
        finally:
            await response.aclose()

    async def _error_body(self, response: httpx.Response) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await response.aread()
        except (TimeoutError, httpx.HTTPError):
            return response.reason_phrase or "(no body)"
        return _error_message(body)

    @contextlib.asynccontextmanager
    async def _network(self, on_timeout: str) -> AsyncIterator[None]:
        """One bounded wait on the endpoint; a timeout or a transport error is BrainUnavailable."""
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError:
            raise BrainUnavailable(on_timeout) from None
        except httpx.HTTPError as exc:
            raise BrainUnavailable(_describe(exc, self.url, self.timeout_s)) from exc

    async def _whole(self, response: httpx.Response) -> list[str]:
        """A non-streamed chat.completion (the server ignored "stream": true)."""
        async with self._network(f"{self.url} stalled for {self.timeout_s:g}s"):
            body = await response.aread()
        try:
            data = json.loads(body)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BrainUnavailable(
                f"malformed completion: {_clip(body.decode('utf-8', 'replace'), 80)!r}"
            ) from None
        if not isinstance(content, str):
            raise BrainUnavailable("malformed completion: content is not text")
        return [content] if content else []


@dataclass(frozen=True, slots=True)
class LlmSettings:
    """Where the engine's brain thinks: an OpenAI-compatible endpoint; no base_url: offline."""

    base_url: str = ""
    model: str = ""
    api_key: str = ""
    timeout_s: float = 20.0
    max_history_tokens: int = 2_000


def brain_for(llm: LlmSettings) -> Brain:
    """`LlmBrain` when an endpoint is configured, else the offline `OfflineBrain`."""
    base_url = llm.base_url.strip()
    if not base_url:
        from parleyd.engine.offline_brain import OfflineBrain

        return OfflineBrain()
    return LlmBrain(
        base_url,
        llm.model.strip() or DEFAULT_MODEL,
        llm.api_key.strip(),
        timeout_s=llm.timeout_s,
        max_history_tokens=llm.max_history_tokens,
    )
