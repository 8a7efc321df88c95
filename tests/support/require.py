"""Skips that cannot hide a missing dependency in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(reason: str) -> NoReturn:
    """Something a test needs is missing (`reason` says what, and how to get it).

    Under CI (the `CI` environment variable set, as `.ci/run` does) that is a failure: CI must
    have everything. Elsewhere the test skips, saying why. Works in a test, a fixture, or at the
    top of a module.
    """
    if in_ci():
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
