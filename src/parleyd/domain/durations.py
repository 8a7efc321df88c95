"""Human durations for flags and settings: "90s", "5m", "1h30m", "250ms", or plain seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return round(float(value) * 1000)
    pos, total = 0, 0.0
    for m in _PART.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if not value or pos != len(value):
        raise ValueError(f"{text!r} is not a duration such as 90s, 5m, 1h30m or 250ms")
    return round(total)
