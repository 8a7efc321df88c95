"""Opaque page tokens: round trips, and every kind of bad token refused on `page_token`."""

from __future__ import annotations

import base64
import json
import random
import string

import pytest

from parleyd.domain.errors import InvalidArgument
from parleyd.domain.ids import new_session_id
from parleyd.domain.paging import decode_page_token, encode_page_token, filters_fingerprint

FP = filters_fingerprint({"state": "", "agent_id": "npc", "user_id": "", "metadata": {}})


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_of(payload: object) -> str:
    return b64(json.dumps(payload).encode())


def refused(token: str, kind: str = "sessions", fp: str = FP, field: str = "page_token") -> str:
    with pytest.raises(InvalidArgument) as info:
        decode_page_token(token, kind, fp, field)
    assert [v.field for v in info.value.violations] == [field]
    return info.value.violations[0].description


@pytest.mark.parametrize("cursor", [new_session_id(), 0, 1, 499, 2**31 - 1, "x"])
def test_round_trip(cursor: str | int) -> None:
    token = encode_page_token("sessions", cursor, FP)
    assert decode_page_token(token, "sessions", FP) == cursor
    assert type(decode_page_token(token, "sessions", FP)) is type(cursor)


def test_token_is_url_safe_and_opaque() -> None:
    token = encode_page_token("sessions", new_session_id(), FP)
    assert "=" not in token
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_empty_token_means_first_page() -> None:
    assert decode_page_token("", "sessions", FP) is None


def test_random_garbage_is_refused() -> None:
    rng = random.Random(1234)
    alphabet = string.printable + "éü€\x00"
    for _ in range(300):
        garbage = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        assert "not a page token" in refused(garbage)


@pytest.mark.parametrize(
    "raw",
    [
        b"hello world",  # base64 of non-JSON
        b"\xff\xfe\xfd",  # not UTF-8
        b"null",
        b"[]",
        b'"sessions"',
        b"42",
        b"[" * 100_000,  # deeply nested JSON: RecursionError inside json
        b'{"k": "sessions", "f": "x"}',  # no cursor
    ],
)
def test_base64_of_something_else_is_refused(raw: bytes) -> None:
    assert "not a page token" in refused(b64(raw))


@pytest.mark.parametrize(
    "cursor",
    [1.5, True, None, [1], {"a": 1}, -1, 2**31, 10**30, "a\x00b", "x" * 257],
)
def test_forged_cursors_are_refused(cursor: object) -> None:
    # Tokens are unsigned: a caller can build one with the right fingerprint by hand. Cursors the
    # store could not bind (NUL in text, integers beyond int32) must still be INVALID_ARGUMENT.
    assert "not a page token" in refused(token_of({"k": "sessions", "c": cursor, "f": FP}))


def test_wrong_kind_is_refused() -> None:
    token = encode_page_token("messages", 10, FP)
    assert "not a page token" in refused(token, kind="sessions")
    assert decode_page_token(token, "messages", FP) == 10


def test_token_for_other_filters_is_refused() -> None:
    token = encode_page_token("sessions", new_session_id(), FP)
    other = filters_fingerprint({"state": "", "agent_id": "other", "user_id": "", "metadata": {}})
    assert other != FP
    assert "different filters" in refused(token, fp=other)


def test_tampered_token_is_refused() -> None:
    token = encode_page_token("sessions", "sess_A", FP)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidArgument):
        decode_page_token(flipped, "sessions", FP)


def test_field_name_is_the_one_passed_in() -> None:
    refused("!!!", field="next.page_token")


def test_fingerprint_is_order_independent_and_sensitive_to_values() -> None:
    a = filters_fingerprint({"agent_id": "npc", "metadata": {"a": "1", "b": "2"}})
    b = filters_fingerprint({"metadata": {"b": "2", "a": "1"}, "agent_id": "npc"})
    c = filters_fingerprint({"agent_id": "npc", "metadata": {"a": "1", "b": "3"}})
    assert a == b
    assert a != c
    assert len(a) == 16
