"""The README is part of the product: its configuration table and commands must stay true."""

from __future__ import annotations

from pathlib import Path

from parleyd.config import SETTINGS, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_configuration_table_matches_the_settings() -> None:
    assert markdown_table() in README.read_text()


def test_every_setting_has_a_flag_and_an_environment_variable() -> None:
    text = README.read_text()
    for s in SETTINGS:
        assert s.flag in text
        assert s.env in text


def test_readme_shows_exactly_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
