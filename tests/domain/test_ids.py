"""Session ids, secrets and how tokens are hashed and sealed."""

from __future__ import annotations

import re
import time

import pytest
from ulid import ULID

from parleyd.domain.ids import (
    ACCESS_TOKEN_PREFIX,
    API_KEY_PREFIX,
    SESSION_PREFIX,
    is_session_id,
    new_access_token,
    new_api_key,
    new_session_id,
    seal_token,
    secret_hash,
    secrets_equal,
    unseal_token,
)

CROCKFORD = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def test_session_id_format() -> None:
    sid = new_session_id()
    assert sid.startswith(SESSION_PREFIX)
    assert SESSION_PREFIX == "sess_"
    assert len(sid) == 5 + 26
    assert CROCKFORD.fullmatch(sid[5:])
    assert is_session_id(sid)


def test_session_id_carries_its_creation_time() -> None:
    before = int(time.time() * 1000)
    sid = new_session_id()
    after = int(time.time() * 1000)
    assert before <= ULID.from_str(sid[5:]).milliseconds <= after


def test_session_ids_sort_by_creation_time() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_session_id())
        time.sleep(0.002)  # ULIDs order by millisecond; within one ms the order is random
    assert sorted(ids) == ids


def test_session_ids_are_unique() -> None:
    ids = {new_session_id() for _ in range(5_000)}
    assert len(ids) == 5_000


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sess_",
        "sess_" + "0" * 25,
        "sess_" + "0" * 27,
        "sess_" + "0" * 25 + "O",  # O is not Crockford base32
        "sess_" + "0" * 26 + "\n",
        "pat_" + "0" * 26,
    ],
)
def test_is_session_id_refuses(value: str) -> None:
    assert not is_session_id(value)


def test_tokens_and_keys_are_prefixed_random_and_distinct() -> None:
    tokens = {new_access_token() for _ in range(200)}
    keys = {new_api_key() for _ in range(200)}
    assert len(tokens) == len(keys) == 200
    assert all(t.startswith(ACCESS_TOKEN_PREFIX) and len(t) >= 4 + 43 for t in tokens)
    assert all(k.startswith(API_KEY_PREFIX) and len(k) >= 3 + 43 for k in keys)


def test_secret_hash_is_stable_hex_sha256() -> None:
    assert secret_hash("pk_abc") == secret_hash("pk_abc")
    # SHA-256("abc"), a published test vector: the stored hash must not drift between releases.
    assert secret_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert secret_hash("pk_abc") != secret_hash("pk_abd")
    assert len(secret_hash(new_api_key())) == 64


def test_secrets_equal() -> None:
    assert secrets_equal("abc", "abc")
    assert not secrets_equal("abc", "abd")
    assert not secrets_equal("abc", "abcd")


def test_seal_round_trip() -> None:
    token, key, sid = new_access_token(), new_api_key(), new_session_id()
    sealed = seal_token(token, key, "req-1", sid)
    assert token not in sealed
    assert re.fullmatch(r"[0-9a-f]+", sealed)
    assert unseal_token(sealed, key, "req-1", sid) == token


def test_seal_fits_the_column() -> None:
    # tables.SessionRow.token_sealed is VARCHAR(256).
    assert len(seal_token(new_access_token(), new_api_key(), "r" * 128, new_session_id())) <= 256


def test_long_tokens_use_more_than_one_keystream_block() -> None:
    token = "pat_" + "x" * 200  # longer than one 32-byte HMAC block
    sealed = seal_token(token, "pk_k", "r", "sess_x")
    assert unseal_token(sealed, "pk_k", "r", "sess_x") == token


@pytest.mark.parametrize(
    ("key", "request_id", "session_id"),
    [
        ("pk_other", "req-1", "sess_1"),
        ("pk_key", "req-2", "sess_1"),
        ("pk_key", "req-1", "sess_2"),
    ],
)
def test_other_key_request_or_session_does_not_unseal(
    key: str, request_id: str, session_id: str
) -> None:
    token = new_access_token()
    sealed = seal_token(token, "pk_key", "req-1", "sess_1")
    try:
        opened = unseal_token(sealed, key, request_id, session_id)
    except UnicodeDecodeError:
        return  # garbage bytes: certainly not the token
    assert opened != token


def test_same_token_sealed_for_different_requests_differs() -> None:
    token, key = new_access_token(), new_api_key()
    assert seal_token(token, key, "a", "sess_1") != seal_token(token, key, "b", "sess_1")
    # Deterministic for the same inputs (a retry must see the same sealed value).
    assert seal_token(token, key, "a", "sess_1") == seal_token(token, key, "a", "sess_1")
