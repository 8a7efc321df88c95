"""Checks of caller-supplied session fields: every problem is reported, each naming its field."""

from __future__ import annotations

from collections.abc import Iterable

from parleyd.domain import limits
from parleyd.domain.errors import FieldViolation, InvalidArgument
from parleyd.domain.ids import is_session_id
from parleyd.domain.session import SessionSpec

_NUL = "\x00"
_NUL_MESSAGE = "must not contain NUL (U+0000) characters"


def word_count(text: str) -> int:
    return len(text.split())


def check_session_id(value: str, field: str = "session_id") -> None:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not is_session_id(value):
        raise InvalidArgument.field(field, "must be 'sess_' followed by a 26-character ULID")


def spec_violations(
    spec: SessionSpec,
    fields: Iterable[str],
    *,
    prefix: str = "session.",
    key_max_duration_ms: int,
) -> list[FieldViolation]:
    """Violations among the named (proto) fields of `spec`."""
    out: list[FieldViolation] = []
    wanted = set(fields)

    def bad(name: str, description: str) -> None:
        out.append(FieldViolation(prefix + name, description))

    def short_text(name: str, value: str, required: bool = False) -> None:
        if required and not value.strip():
            bad(name, "is required")
        elif len(value) > limits.ID_FIELD_MAX_CHARS:
            bad(name, f"is {len(value)} characters; the limit is {limits.ID_FIELD_MAX_CHARS}")

    if "agent_id" in wanted:
        short_text("agent_id", spec.agent_id, required=True)
    for name in ("user_id", "profile", "avatar_id", "speaker_id"):
        if name in wanted:
            short_text(name, getattr(spec, name))
    if "situation" in wanted:
        words = word_count(spec.situation)
        if words > limits.SITUATION_MAX_WORDS:
            bad("situation", f"has {words} words; the limit is {limits.SITUATION_MAX_WORDS} words")
        elif len(spec.situation) > limits.SITUATION_MAX_CHARS:
            bad(
                "situation",
                f"is {len(spec.situation)} characters; the limit is {limits.SITUATION_MAX_CHARS}",
            )
    if "dynamic_info" in wanted and len(spec.dynamic_info) > limits.DYNAMIC_INFO_MAX_CHARS:
        bad(
            "dynamic_info",
            f"is {len(spec.dynamic_info)} characters; the limit is {limits.DYNAMIC_INFO_MAX_CHARS}",
        )
    if "scene" in wanted:
        if len(spec.scene) > limits.SCENE_MAX_ITEMS:
            bad("scene", f"has {len(spec.scene)} items; the limit is {limits.SCENE_MAX_ITEMS}")
        for i, item in enumerate(spec.scene[: limits.SCENE_MAX_ITEMS]):
            if not item.name.strip():
                bad(f"scene[{i}].name", "is required")
            elif len(item.name) > limits.SCENE_NAME_MAX_CHARS:
                bad(f"scene[{i}].name", f"the limit is {limits.SCENE_NAME_MAX_CHARS} characters")
            if len(item.description) > limits.SCENE_DESCRIPTION_MAX_CHARS:
                bad(
                    f"scene[{i}].description",
                    f"the limit is {limits.SCENE_DESCRIPTION_MAX_CHARS} characters",
                )
    # PostgreSQL cannot store U+0000 in text; proto3 strings may carry it. Refuse it here, naming
    # the field, rather than failing in the database.
    for name in (
        "agent_id",
        "user_id",
        "profile",
        "avatar_id",
        "speaker_id",
        "situation",
        "dynamic_info",
    ):
        if name in wanted and _NUL in getattr(spec, name):
            bad(name, _NUL_MESSAGE)
    if "scene" in wanted:
        for i, item in enumerate(spec.scene[: limits.SCENE_MAX_ITEMS]):
            if _NUL in item.name:
                bad(f"scene[{i}].name", _NUL_MESSAGE)
            if _NUL in item.description:
                bad(f"scene[{i}].description", _NUL_MESSAGE)
    if "metadata" in wanted:
        out.extend(metadata_violations(spec.metadata, prefix + "metadata"))
    if "max_duration" in wanted and spec.max_duration_ms is not None:
        if spec.max_duration_ms <= 0:
            bad("max_duration", "must be positive")
        elif spec.max_duration_ms > key_max_duration_ms:
            bad(
                "max_duration",
                f"is {spec.max_duration_ms / 1000:g}s; this API key allows at most "
                f"{key_max_duration_ms / 1000:g}s",
            )
    if "resume_window" in wanted and spec.resume_window_ms is not None:
        w = spec.resume_window_ms
        if not limits.RESUME_WINDOW_MIN_MS <= w <= limits.RESUME_WINDOW_MAX_MS:
            bad("resume_window", "must be between 1 second and 7 days")
    if (
        "continue_from_session_id" in wanted
        and spec.continue_from_session_id
        and not is_session_id(spec.continue_from_session_id)
    ):
        bad("continue_from_session_id", "must be 'sess_' followed by a 26-character ULID")
    return out


def metadata_violations(metadata: dict[str, str], field: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if len(metadata) > limits.METADATA_MAX_PAIRS:
        out.append(
            FieldViolation(
                field, f"has {len(metadata)} pairs; the limit is {limits.METADATA_MAX_PAIRS}"
            )
        )
    for key, value in metadata.items():
        if not key:
            out.append(FieldViolation(field, "keys must not be empty"))
        elif len(key) > limits.METADATA_KEY_MAX_CHARS:
            out.append(
                FieldViolation(
                    f"{field}[{key[:16]}...]",
                    f"key is {len(key)} characters; the limit is {limits.METADATA_KEY_MAX_CHARS}",
                )
            )
        if _NUL in key:
            out.append(FieldViolation(field, f"keys {_NUL_MESSAGE}"))
        if _NUL in value:
            out.append(FieldViolation(f"{field}[{key[:64]}]", f"value {_NUL_MESSAGE}"))
        if len(value) > limits.METADATA_VALUE_MAX_CHARS:
            out.append(
                FieldViolation(
                    f"{field}[{key[:64]}]",
                    f"value is {len(value)} characters; the limit is "
                    f"{limits.METADATA_VALUE_MAX_CHARS}",
                )
            )
    return out


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)
