"""Human durations for flags and settings."""

from __future__ import annotations

import pytest

from parleyd.domain.durations import parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("90", 90_000),
        ("1.5", 1_500),
        ("0.001", 1),
        ("250ms", 250),
        ("90s", 90_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("1h30m15s", 5_415_000),
        ("1m500ms", 60_500),
        ("1.5s", 1_500),
        ("0.5h", 1_800_000),
        ("  90s  ", 90_000),
        ("5M", 300_000),
        ("1H30M", 5_400_000),
        ("7d", 604_800_000),
    ],
)
def test_parses(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert isinstance(parse_duration_ms(text), int)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "s",
        "ms",
        "5x",
        "5 m",
        "1h 30m",
        "-5s",
        "+5s",
        "5s junk",
        "junk 5s",
        "1e3",
        "1.s",
        ".5s",
        "5mm",
        "1h30",
        "one minute",
    ],
)
def test_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration_ms(text)
    assert repr(text) in str(info.value)
