"""Field checks of caller-supplied session fields: limits at their edges, each violation named."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from parleyd.domain import limits
from parleyd.domain.errors import FieldViolation, InvalidArgument
from parleyd.domain.ids import new_session_id
from parleyd.domain.session import SceneItem, SessionSpec
from parleyd.domain.validation import (
    check_session_id,
    metadata_violations,
    raise_if,
    spec_violations,
    word_count,
)

ALL_FIELDS = (
    "agent_id",
    "user_id",
    "profile",
    "avatar_id",
    "speaker_id",
    "situation",
    "dynamic_info",
    "scene",
    "metadata",
    "max_duration",
    "resume_window",
    "continue_from_session_id",
)
KEY_MAX_MS = 3_600_000


def violations(spec: SessionSpec, fields: Iterable[str] = ALL_FIELDS) -> list[FieldViolation]:
    return spec_violations(spec, fields, key_max_duration_ms=KEY_MAX_MS)


def fields_of(found: list[FieldViolation]) -> list[str]:
    return [v.field for v in found]


def one(found: list[FieldViolation], field: str) -> FieldViolation:
    matching = [v for v in found if v.field == field]
    assert len(matching) == 1, f"expected one violation on {field}, got {found}"
    return matching[0]


def test_a_minimal_spec_is_valid() -> None:
    assert violations(SessionSpec(agent_id="npc")) == []


def test_agent_id_is_required() -> None:
    for blank in ("", "   "):
        found = violations(SessionSpec(agent_id=blank))
        assert one(found, "session.agent_id").description == "is required"


@pytest.mark.parametrize("name", ["agent_id", "user_id", "profile", "avatar_id", "speaker_id"])
def test_id_fields_limit(name: str) -> None:
    ok = SessionSpec(agent_id="npc")
    setattr(ok, name, "x" * limits.ID_FIELD_MAX_CHARS)
    assert violations(ok) == []
    bad = SessionSpec(agent_id="npc")
    setattr(bad, name, "x" * (limits.ID_FIELD_MAX_CHARS + 1))
    v = one(violations(bad), f"session.{name}")
    assert str(limits.ID_FIELD_MAX_CHARS) in v.description
    assert "129" in v.description


def test_situation_word_limit_at_the_edge() -> None:
    at_limit = " ".join(["word"] * limits.SITUATION_MAX_WORDS)
    assert word_count(at_limit) == 2_500
    assert violations(SessionSpec(agent_id="npc", situation=at_limit)) == []

    over = at_limit + " more"
    found = violations(SessionSpec(agent_id="npc", situation=over))
    v = one(found, "session.situation")
    assert "2501 words" in v.description
    assert "limit is 2500 words" in v.description


def test_situation_counts_words_on_any_whitespace() -> None:
    text = "\n".join(["a\tb"] * 1_250) + "\n extra"
    assert word_count(text) == 2_501
    assert fields_of(violations(SessionSpec(agent_id="npc", situation=text))) == [
        "session.situation"
    ]


def test_situation_character_limit_applies_below_the_word_limit() -> None:
    # Few words, many characters: the character limit catches it.
    long_words = " ".join(["x" * 1_000] * 33)  # 33 words, 33,032 characters
    assert len(long_words) > limits.SITUATION_MAX_CHARS
    v = one(violations(SessionSpec(agent_id="npc", situation=long_words)), "session.situation")
    assert str(limits.SITUATION_MAX_CHARS) in v.description
    exact = "x" * limits.SITUATION_MAX_CHARS
    assert violations(SessionSpec(agent_id="npc", situation=exact)) == []


def test_dynamic_info_limit() -> None:
    ok = SessionSpec(agent_id="npc", dynamic_info="d" * limits.DYNAMIC_INFO_MAX_CHARS)
    assert violations(ok) == []
    bad = SessionSpec(agent_id="npc", dynamic_info="d" * (limits.DYNAMIC_INFO_MAX_CHARS + 1))
    assert "4096" in one(violations(bad), "session.dynamic_info").description


def test_scene_item_count_limit() -> None:
    items = [SceneItem(f"item{i}") for i in range(limits.SCENE_MAX_ITEMS)]
    assert violations(SessionSpec(agent_id="npc", scene=items)) == []
    items.append(SceneItem("one too many"))
    v = one(violations(SessionSpec(agent_id="npc", scene=items)), "session.scene")
    assert "65 items" in v.description
    assert "limit is 64" in v.description


def test_scene_item_fields() -> None:
    scene = [
        SceneItem("x" * limits.SCENE_NAME_MAX_CHARS, "d" * limits.SCENE_DESCRIPTION_MAX_CHARS),
        SceneItem("x" * (limits.SCENE_NAME_MAX_CHARS + 1)),
        SceneItem("  ", "fine"),
        SceneItem("lamp", "d" * (limits.SCENE_DESCRIPTION_MAX_CHARS + 1)),
    ]
    found = violations(SessionSpec(agent_id="npc", scene=scene))
    assert sorted(fields_of(found)) == [
        "session.scene[1].name",
        "session.scene[2].name",
        "session.scene[3].description",
    ]
    assert "128" in one(found, "session.scene[1].name").description
    assert one(found, "session.scene[2].name").description == "is required"
    assert "1024" in one(found, "session.scene[3].description").description


def test_metadata_pair_count_limit() -> None:
    pairs = {f"k{i}": "v" for i in range(limits.METADATA_MAX_PAIRS)}
    assert metadata_violations(pairs, "session.metadata") == []
    pairs["k64"] = "v"
    found = metadata_violations(pairs, "session.metadata")
    assert fields_of(found) == ["session.metadata"]
    assert "65 pairs" in found[0].description
    assert "limit is 64" in found[0].description


def test_metadata_key_length_limit() -> None:
    assert metadata_violations({"k" * 64: "v"}, "session.metadata") == []
    found = metadata_violations({"k" * 65: "v"}, "session.metadata")
    assert len(found) == 1
    assert found[0].field.startswith("session.metadata[")
    assert "65 characters" in found[0].description
    assert "limit is 64" in found[0].description


def test_metadata_value_length_limit() -> None:
    assert metadata_violations({"k": "v" * 512}, "session.metadata") == []
    found = metadata_violations({"mood": "v" * 513}, "session.metadata")
    assert fields_of(found) == ["session.metadata[mood]"]
    assert "513 characters" in found[0].description
    assert "limit is 512" in found[0].description


def test_metadata_key_must_not_be_empty() -> None:
    found = metadata_violations({"": "v"}, "metadata")
    assert fields_of(found) == ["metadata"]
    assert "empty" in found[0].description


def test_metadata_is_checked_through_spec_with_prefix() -> None:
    found = violations(SessionSpec(agent_id="npc", metadata={"mood": "x" * 513}))
    assert fields_of(found) == ["session.metadata[mood]"]
    # Another prefix, as UpdateSession or a filter might use.
    found = spec_violations(
        SessionSpec(agent_id="npc", metadata={"mood": "x" * 513}),
        ["metadata"],
        prefix="",
        key_max_duration_ms=KEY_MAX_MS,
    )
    assert fields_of(found) == ["metadata[mood]"]


def test_max_duration_bounds() -> None:
    assert violations(SessionSpec(agent_id="npc", max_duration_ms=KEY_MAX_MS)) == []
    v = one(
        violations(SessionSpec(agent_id="npc", max_duration_ms=KEY_MAX_MS + 1_000)),
        "session.max_duration",
    )
    assert "3601s" in v.description
    assert "at most 3600s" in v.description
    for bad in (0, -1):
        v = one(
            violations(SessionSpec(agent_id="npc", max_duration_ms=bad)), "session.max_duration"
        )
        assert v.description == "must be positive"
    # Unset means "use the key's limit": not a violation.
    assert violations(SessionSpec(agent_id="npc", max_duration_ms=None)) == []


@pytest.mark.parametrize(
    ("window_ms", "ok"),
    [
        (limits.RESUME_WINDOW_MIN_MS - 1, False),
        (limits.RESUME_WINDOW_MIN_MS, True),
        (60_000, True),
        (limits.RESUME_WINDOW_MAX_MS, True),
        (limits.RESUME_WINDOW_MAX_MS + 1, False),
        (0, False),
        (-1_000, False),
        (None, True),
    ],
)
def test_resume_window_bounds(window_ms: int | None, ok: bool) -> None:
    found = violations(SessionSpec(agent_id="npc", resume_window_ms=window_ms))
    if ok:
        assert found == []
    else:
        assert "between 1 second and 7 days" in one(found, "session.resume_window").description


def test_continue_from_session_id_format() -> None:
    good = SessionSpec(agent_id="npc", continue_from_session_id=new_session_id())
    assert violations(good) == []
    bad = SessionSpec(agent_id="npc", continue_from_session_id="sess_nope")
    assert fields_of(violations(bad)) == ["session.continue_from_session_id"]


def test_only_named_fields_are_checked() -> None:
    spec = SessionSpec(
        agent_id="",
        situation="w " * 3_000,
        metadata={"k": "v" * 600},
        max_duration_ms=-5,
    )
    assert sorted(fields_of(violations(spec))) == [
        "session.agent_id",
        "session.max_duration",
        "session.metadata[k]",
        "session.situation",
    ]
    # UpdateSession with mask ["situation"] only looks at situation.
    assert fields_of(violations(spec, ["situation"])) == ["session.situation"]
    assert violations(spec, []) == []


def test_every_problem_is_reported_at_once_and_raise_if_carries_them() -> None:
    spec = SessionSpec(
        agent_id="a" * 200,
        user_id="u" * 200,
        resume_window_ms=1,
        scene=[SceneItem("")],
    )
    found = violations(spec)
    assert sorted(fields_of(found)) == [
        "session.agent_id",
        "session.resume_window",
        "session.scene[0].name",
        "session.user_id",
    ]
    with pytest.raises(InvalidArgument) as info:
        raise_if(found)
    assert info.value.violations == found
    assert "session.user_id" in info.value.message
    raise_if([])  # nothing to raise


@pytest.mark.parametrize(
    "name", ["agent_id", "user_id", "profile", "avatar_id", "speaker_id", "situation"]
)
def test_nul_characters_are_refused_by_field(name: str) -> None:
    # PostgreSQL cannot store U+0000 in text: it must be a named INVALID_ARGUMENT, not a DB error.
    spec = SessionSpec(agent_id="npc")
    setattr(spec, name, "ab\x00c")
    assert "NUL" in one(violations(spec), f"session.{name}").description


def test_nul_characters_in_scene_and_metadata_are_refused() -> None:
    spec = SessionSpec(
        agent_id="npc",
        dynamic_info="\x00",
        scene=[SceneItem("a\x00", "b\x00")],
        metadata={"k": "v\x00", "bad\x00key": "v"},
    )
    assert sorted(fields_of(violations(spec))) == [
        "session.dynamic_info",
        "session.metadata",
        "session.metadata[k]",
        "session.scene[0].description",
        "session.scene[0].name",
    ]


def test_check_session_id_accepts_generated_ids() -> None:
    for _ in range(20):
        check_session_id(new_session_id())


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("", "is required"),
        ("sess_", "ULID"),
        ("01HZY3N5V8Q0W1X2Y3Z4A5B6C7", "ULID"),  # no prefix
        ("sess_01HZY3N5V8Q0W1X2Y3Z4A5B6C", "ULID"),  # 25 characters
        ("sess_01HZY3N5V8Q0W1X2Y3Z4A5B6C78", "ULID"),  # 27 characters
        ("sess_01hzy3n5v8q0w1x2y3z4a5b6c7", "ULID"),  # lower case
        ("sess_01HZY3N5V8Q0W1X2Y3Z4A5B6CI", "ULID"),  # I is not Crockford base32
        ("sess_01HZY3N5V8Q0W1X2Y3Z4A5B6CU", "ULID"),  # nor is U
        ("sess_01HZY3N5V8Q0W1X2Y3Z4A5B6C7\n", "ULID"),  # trailing newline
        (" sess_01HZY3N5V8Q0W1X2Y3Z4A5B6C7", "ULID"),
        ("SESS_01HZY3N5V8Q0W1X2Y3Z4A5B6C7", "ULID"),
        ("sess_01HZY3N5V8Q0W1X2Y3Z4A5B6C7; DROP TABLE sessions", "ULID"),
    ],
)
def test_check_session_id_refuses(value: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_session_id(value, field="session.id")
    assert [v.field for v in info.value.violations] == ["session.id"]
    assert description in info.value.violations[0].description


def test_check_session_id_default_field_name() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_session_id("nope")
    assert info.value.violations[0].field == "session_id"
