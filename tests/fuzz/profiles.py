"""The fuzzers' budgets: hypothesis settings profiles, chosen by PARLEYD_FUZZ_PROFILE.

- `short` (the default): what the normal suite runs. tests/fuzz and the lifecycle state machine
  together stay under a minute on a 2-core machine.
- `long`: `make fuzz` (PARLEYD_FUZZ_PROFILE=long), about five minutes.

Every fuzz test takes its number of examples from `fuzz_settings(kind)`, so one table below says
what each profile spends where. Failing examples are kept in hypothesis's example database under
.hypothesis/ at the repository root (git-ignored) and replayed first on the next run; each crash
found is also written out as a plain test in tests/fuzz/test_regressions.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE_ENV = "PARLEYD_FUZZ_PROFILE"
DEFAULT_PROFILE = "short"
ROOT = Path(__file__).resolve().parents[2]

# kind -> (max_examples, stateful_step_count, shrink) per profile. "unary" and "unary_bytes" are
# per RPC. The short profile does not shrink a failing Interact conversation: timing makes those
# flaky to replay and each replay can take a call deadline; `make fuzz` does.
BUDGETS: dict[str, dict[str, tuple[int, int, bool]]] = {
    "short": {
        "unary": (25, 0, True),
        "unary_bytes": (15, 0, True),
        "interact": (12, 0, False),
        "lifecycle": (20, 25, True),
    },
    "long": {
        "unary": (400, 0, True),
        "unary_bytes": (250, 0, True),
        "interact": (150, 0, True),
        "lifecycle": (300, 50, True),
    },
}

_COMMON = {
    "deadline": None,  # one example talks to a live server: its time is bounded by call deadlines
    "database": DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples")),
    "print_blob": True,
    "suppress_health_check": (
        # One server (or one database) serves every example of a test on purpose.
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ),
}

for _name, _budget in BUDGETS.items():
    settings.register_profile(f"parleyd-fuzz-{_name}", max_examples=_budget["unary"][0], **_COMMON)  # type: ignore[arg-type]


def profile_name() -> str:
    name = os.environ.get(PROFILE_ENV, DEFAULT_PROFILE) or DEFAULT_PROFILE
    if name not in BUDGETS:
        raise ValueError(f"{PROFILE_ENV}={name!r}: use one of {sorted(BUDGETS)}")
    return name


def load_profile() -> str:
    """Makes the selected profile hypothesis's default (tests/fuzz/conftest.py calls it)."""
    name = profile_name()
    settings.load_profile(f"parleyd-fuzz-{name}")
    return name


def fuzz_settings(kind: str) -> settings:
    """The settings of one fuzz test: the selected profile with that test's budget."""
    name = profile_name()
    examples, steps, shrink = BUDGETS[name][kind]
    parent = settings.get_profile(f"parleyd-fuzz-{name}")
    phases = (
        tuple(parent.phases) if shrink else tuple(p for p in parent.phases if p != Phase.shrink)
    )
    if steps:
        return settings(parent, max_examples=examples, stateful_step_count=steps, phases=phases)
    return settings(parent, max_examples=examples, phases=phases)
