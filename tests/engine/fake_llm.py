"""A local fake of an OpenAI-compatible chat-completions server, faithful to the wire protocol.

A small HTTP/1.1 server on 127.0.0.1 (asyncio streams, keep-alive, chunked transfer encoding)
answering `POST /v1/chat/completions`:

- `"stream": true`: `200 text/event-stream`, one SSE event per chunk in the OpenAI format
  (`id`, `object: "chat.completion.chunk"`, `created`, `model`, `choices[0].delta` — first the
  role, then the content pieces — a last chunk with `finish_reason: "stop"`), then
  `data: [DONE]`;
- otherwise one `chat.completion` JSON object.

It records every request (`requests`: method, path, headers, JSON body) so tests can check the
prompt, and has switchable failure modes (`mode`, or `fail_next(mode)` for one request only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_PIECES = ("Hello", " there", "!", " A sword", " costs", " 20", " gold", ".")


class Mode(StrEnum):
    OK = "ok"
    HTTP_500 = "http_500"  # 500 with an OpenAI-style JSON error body
    UNAUTHORIZED = "unauthorized"  # 401 with an OpenAI-style JSON error body
    SILENT = "silent"  # reads the request, never answers (no first byte)
    STALL = "stall"  # sends the response headers, then nothing
    STALL_MID = "stall_mid"  # sends a couple of pieces, then nothing
    DISCONNECT = "disconnect"  # sends a couple of pieces, then closes the connection
    MALFORMED = "malformed"  # sends a piece, then a data line that is not JSON
    NON_STREAMING = "non_streaming"  # ignores "stream": true, answers one JSON completion


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: Any

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def system_prompt(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m.get("role") == "system")


class FakeLlm:
    def __init__(
        self,
        pieces: Sequence[str] = DEFAULT_PIECES,
        *,
        api_key: str | None = None,
        piece_delay_s: float = 0.0,
    ) -> None:
        self.pieces = list(pieces)
        self.api_key = api_key  # when set, other bearer tokens get 401
        self.piece_delay_s = piece_delay_s
        self.mode = Mode.OK
        self.requests: list[RecordedRequest] = []
        # When set, the server sends the first content piece and waits for this before the rest.
        self.hold_after_first: asyncio.Event | None = None
        self._next_modes: deque[Mode] = deque()
        self._closing = asyncio.Event()  # ends the stalls when the server closes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._serial = 0
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeLlm:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closing.set()
        for writer in list(self._writers):
            writer.close()
        pending = list(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=2)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeLlm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, mode: Mode) -> None:
        """The next request (only) gets `mode`; later ones get `self.mode` again."""
        self._next_modes.append(mode)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                keep_open = await self._respond(request, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _version = line.decode("latin-1").strip().split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    break
                data += await reader.readexactly(size)
                await reader.readexactly(2)
        else:
            data = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body: Any = json.loads(data) if data else None
        except ValueError:
            body = data.decode("utf-8", "replace")
        return RecordedRequest(method, path, headers, body)

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        mode = self._next_modes.popleft() if self._next_modes else self.mode
        if request.method != "POST" or request.path.rstrip("/") != "/v1/chat/completions":
            await self._json(writer, 404, {"error": _error("Not found", "invalid_request_error")})
            return True
        authorization = request.headers.get("authorization", "")
        bad_key = self.api_key is not None and authorization != f"Bearer {self.api_key}"
        if mode == Mode.UNAUTHORIZED or bad_key:
            error = _error(
                "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
            )
            await self._json(writer, 401, {"error": error})
            return True
        if mode == Mode.HTTP_500:
            error = _error("The server had an error while processing your request.", "server_error")
            await self._json(writer, 500, {"error": error})
            return True
        if mode == Mode.SILENT:
            await self._closing.wait()  # until the server closes
            return False
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model", "fake-model"))
        self._serial += 1
        ident = f"chatcmpl-fake{self._serial:06d}"
        created = int(time.time())
        if mode == Mode.NON_STREAMING or not body.get("stream"):
            await self._json(writer, 200, _completion(ident, created, model, "".join(self.pieces)))
            return True

        writer.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\n"
            b"Connection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        if mode == Mode.STALL:
            await self._closing.wait()
            return False

        async def event(payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
            )

        await event(chunk({"role": "assistant", "content": ""}))
        for i, piece in enumerate(self.pieces):
            if i and self.piece_delay_s:
                await asyncio.sleep(self.piece_delay_s)
            await event(chunk({"content": piece}))
            if i == 0 and self.hold_after_first is not None:
                hold = asyncio.ensure_future(self.hold_after_first.wait())
                closing = asyncio.ensure_future(self._closing.wait())
                await asyncio.wait({hold, closing}, return_when=asyncio.FIRST_COMPLETED)
                hold.cancel()
                closing.cancel()
                if self._closing.is_set():
                    return False
            if i == 0 and mode == Mode.MALFORMED:
                await event('{"id": "' + ident + '", "choices": [{"delta": {"content": "oops"')
            if i == 1 and mode == Mode.STALL_MID:
                await self._closing.wait()
                return False
            if i == 1 and mode == Mode.DISCONNECT:
                writer.close()
                return False
        await event(chunk({}, "stop"))
        await event("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _json(self, writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        reasons = {200: "OK", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"Connection: keep-alive\r\n\r\n".encode()
            + data
        )
        await writer.drain()


def _error(message: str, kind: str, *, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": kind, "param": None, "code": code}


def _completion(ident: str, created: int, model: str, text: str) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }
