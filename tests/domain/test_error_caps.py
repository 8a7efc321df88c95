"""What an InvalidArgument reports is capped, however many violations it carries."""

from __future__ import annotations

from parleyd.domain import limits
from parleyd.domain.errors import FieldViolation, InvalidArgument, capped_violations, clip_text


def test_clip_text() -> None:
    assert clip_text("short") == "short"
    assert clip_text("x" * limits.FIELD_VIOLATION_TEXT_MAX_CHARS) == "x" * 200
    clipped = clip_text("x" * 1_000)
    assert len(clipped) == limits.FIELD_VIOLATION_TEXT_MAX_CHARS
    assert clipped.endswith("...")
    assert clip_text("abcdef", 5) == "ab..."


def test_few_violations_are_reported_as_they_are() -> None:
    found = [FieldViolation("a", "is required"), FieldViolation("b", "is too long")]
    assert capped_violations(found) == found


def test_many_violations_are_the_first_ones_and_a_count() -> None:
    found = [FieldViolation(f"f{i}" * 300, "d" * 1_000) for i in range(1_000)]
    shown = capped_violations(found)
    assert len(shown) == limits.FIELD_VIOLATIONS_REPORTED_MAX + 1
    for v in shown[:-1]:
        assert len(v.field) <= limits.FIELD_VIOLATION_TEXT_MAX_CHARS
        assert len(v.description) <= limits.FIELD_VIOLATION_TEXT_MAX_CHARS
    assert shown[0].field.startswith("f0f0")
    assert shown[-1] == FieldViolation("", "and 980 more violations not listed")
    one_more = capped_violations(found[: limits.FIELD_VIOLATIONS_REPORTED_MAX + 1])
    assert one_more[-1].description == "and 1 more violation not listed"


def test_the_message_of_an_invalid_argument_is_bounded_and_violations_are_kept() -> None:
    found = [FieldViolation("update_mask.paths", f"unknown field 'p{i}'") for i in range(100_000)]
    err = InvalidArgument(found)
    assert err.violations == found  # in process, every one is still there
    assert len(err.message) < 21 * 2 * limits.FIELD_VIOLATION_TEXT_MAX_CHARS
    assert err.message.startswith("update_mask.paths: unknown field 'p0'; update_mask.paths:")
    assert err.message.endswith("; and 99980 more violations not listed")
