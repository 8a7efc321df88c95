"""`situation` templates: filled from session fields in Jinja2's sandbox, errors named."""

from __future__ import annotations

import pytest

from parleyd.domain.errors import InvalidArgument
from parleyd.domain.session import SceneItem, SessionSpec
from parleyd.domain.templates import render_situation


def spec(situation: str, **kw: object) -> SessionSpec:
    s = SessionSpec(agent_id="innkeeper", situation=situation, render_templates=True)
    for name, value in kw.items():
        setattr(s, name, value)
    return s


def refused(s: SessionSpec, field: str = "session.situation") -> str:
    with pytest.raises(InvalidArgument) as info:
        render_situation(s, field)
    assert [v.field for v in info.value.violations] == [field]
    return info.value.violations[0].description


def test_fills_metadata_placeholders() -> None:
    out = render_situation(
        spec(
            "You greet {{ metadata.user_name }}, a {{ metadata.class }}.",
            metadata={
                "user_name": "Ann",
                "class": "ranger",
            },
        )
    )
    assert out == "You greet Ann, a ranger."


def test_fills_session_fields_and_scene() -> None:
    s = spec(
        "{{ agent_id }} talks to {{ user_id }} ({{ profile }}). {{ dynamic_info }}"
        "{% for item in scene %} [{{ item.name }}: {{ item.description }}]{% endfor %}",
        user_id="u-7",
        profile="gruff",
        dynamic_info="It rains.",
        scene=[SceneItem("lamp", "flickers"), SceneItem("door")],
    )
    assert render_situation(s) == (
        "innkeeper talks to u-7 (gruff). It rains. [lamp: flickers] [door: ]"
    )


def test_render_templates_off_returns_text_untouched() -> None:
    text = "Hi {{ metadata.user_name }} {{ metadata.__class__ }} {% broken"
    s = spec(text, metadata={"user_name": "Ann"})
    s.render_templates = False
    assert render_situation(s) == text


def test_plain_text_and_trailing_newline_are_kept() -> None:
    assert render_situation(spec("Just a tavern.\n")) == "Just a tavern.\n"


def test_unknown_metadata_placeholder_is_named() -> None:
    description = refused(spec("Hi {{ metadata.user_name }}", metadata={"other": "x"}))
    assert "'metadata.user_name'" in description
    assert "has no value" in description


def test_unknown_top_level_placeholder_is_named() -> None:
    assert "'weather'" in refused(spec("It is {{ weather }} today"))


def test_field_name_is_the_one_passed_in() -> None:
    refused(spec("{{ nope }}"), field="situation")


@pytest.mark.parametrize(
    "template",
    [
        "{{ metadata.__class__.__mro__ }}",
        "{{ metadata.__class__ }}",
        "{{ agent_id.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ scene.__len__() }}",
        "{{ metadata.items.__self__ }}",
    ],
)
def test_sandbox_refuses_attribute_escapes(template: str) -> None:
    description = refused(spec(template, metadata={"a": "b"}))
    assert "unsafe" in description


def test_sandbox_escape_does_not_execute() -> None:
    # Were this executed, it would list every class in the interpreter (hundreds of names).
    with pytest.raises(InvalidArgument) as info:
        render_situation(spec("{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    assert "Popen" not in info.value.message
    assert len(info.value.message) < 400


def test_syntax_error_is_invalid_argument() -> None:
    assert "template error" in refused(spec("{{ unclosed"))
    assert "template error" in refused(spec("{% for x in scene %}no end"))


@pytest.mark.parametrize(
    "template",
    [
        "{{ 1 / 0 }}",  # ZeroDivisionError
        "{{ range(10**9) | list }}",  # the sandbox's OverflowError
        "{{ 'a' + 1 }}",  # TypeError
        "{{ 10.0 ** 400 }}",  # float OverflowError
    ],
)
def test_runtime_errors_in_the_template_are_invalid_argument(template: str) -> None:
    # The caller wrote the template: never an internal error.
    assert "template error" in refused(spec(template))


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'ab' * 100000000 }}",
        "{{ 100000000 * 'ab' }}",
        "{{ [1] * 10**9 }}",
        "{{ 2 ** (10 ** 12) }}",
        "{{ 7 ** 100000 }}",
        "{% set x = 2 ** 8000 %}{{ x * x * x }}",
    ],
)
def test_huge_results_are_refused_before_they_are_built(template: str) -> None:
    # Unchecked, each of these would take seconds to hours and up to terabytes of memory.
    assert "too" in refused(spec(template))


def test_ordinary_arithmetic_and_repetition_still_work() -> None:
    out = render_situation(spec("{{ 2 ** 10 }} {{ 3 * 4 }} {{ '-' * 5 }} {{ 2 ** -1 }}"))
    assert out == "1024 12 ----- 0.5"


def test_metadata_is_not_mutated_through_the_template() -> None:
    metadata = {"user_name": "Ann"}
    s = spec(
        "{{ metadata.update({'user_name': 'Eve'}) }}{{ metadata.user_name }}", metadata=metadata
    )
    render_situation(s)
    assert metadata == {"user_name": "Ann"}
    assert s.metadata == {"user_name": "Ann"}
