"""The fuzzers' hypothesis profile: `short` in the normal suite, `long` under `make fuzz`
(PARLEYD_FUZZ_PROFILE=long). See tests/fuzz/profiles.py for the budgets."""

from __future__ import annotations

from tests.fuzz.profiles import load_profile

load_profile()
