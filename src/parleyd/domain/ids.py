"""Identifiers and secrets: session ids, access tokens, API keys, and how they are hashed."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ulid import ULID

SESSION_PREFIX = "sess_"
ACCESS_TOKEN_PREFIX = "pat_"
API_KEY_PREFIX = "pk_"

_SESSION_ID_RE = re.compile(r"^sess_[0-9A-HJKMNP-TV-Z]{26}$")


def new_session_id() -> str:
    """`sess_` + a 26-character ULID: unique and sortable by creation time."""
    return SESSION_PREFIX + str(ULID())


def is_session_id(value: str) -> bool:
    # fullmatch: with match(), `$` also matches before a trailing newline ("sess_…\n").
    return bool(_SESSION_ID_RE.fullmatch(value))


def new_interaction_id() -> str:
    """`int_` + a ULID: names one AI reply (its audio, text and visemes carry it)."""
    return "int_" + str(ULID())


def new_participant_id() -> str:
    """`p_` + a ULID: one live participant (a stream or a peer) of a session."""
    return "p_" + str(ULID())


def new_access_token() -> str:
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """Hash under which a high-entropy secret (token, API key) is stored.

    Secrets are 256-bit random, so a plain SHA-256 cannot be brute-forced; a slow KDF would only
    cost every request time.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def seal_token(token: str, api_key: str, request_id: str, session_id: str) -> str:
    """Encrypt an access token so that only a retry with the same API key and request_id opens it.

    The key stream is derived from the plaintext API key, which the database never holds, so a copy
    of the database reveals no token. Each (key, request_id, session) seals exactly one token.
    """
    data = token.encode()
    stream = _keystream(api_key, request_id, session_id, len(data))
    return bytes(a ^ b for a, b in zip(data, stream, strict=True)).hex()


def unseal_token(sealed: str, api_key: str, request_id: str, session_id: str) -> str:
    data = bytes.fromhex(sealed)
    stream = _keystream(api_key, request_id, session_id, len(data))
    return bytes(a ^ b for a, b in zip(data, stream, strict=True)).decode()


def _keystream(api_key: str, request_id: str, session_id: str, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        msg = f"{request_id}\x00{session_id}\x00{counter}".encode()
        out += hmac.new(api_key.encode(), msg, hashlib.sha256).digest()
        counter += 1
    return out[:length]
