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
        "{{ metadata.items.__self__ }}",
    ],
)
def test_sandbox_refuses_attribute_escapes(template: str) -> None:
    description = refused(spec(template, metadata={"a": "b"}))
    assert "unsafe" in description


@pytest.mark.parametrize(
    "template",
    [
        "{{ agent_id.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ scene.__len__() }}",
    ],
)
def test_calls_and_globals_are_refused_before_rendering(template: str) -> None:
    description = refused(spec(template))
    assert any(w in description for w in ("not allowed", "no value", "unsafe"))


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
    ("template", "needle"),
    [
        ("{{ 1 / 0 }}", "'div' is not allowed"),
        ("{{ range(10**9) | list }}", "not allowed"),
        ("{{ 'a' + 1 }}", "'add' is not allowed"),
        ("{{ 'ab' * 100000000 }}", "'mul' is not allowed"),
        ("{{ 2 ** (10 ** 12) }}", "'pow' is not allowed"),
        ("{% set x = 2 %}{{ x }}", "'assign' is not allowed"),
        ("{{ metadata.x | center(1000000000) }}", "filter 'center' is not allowed"),
        ("{% for c in metadata.k %}{{ c }}{% endfor %}", "only go over scene"),
        (
            "{% for a in scene %}{% for b in scene %}x{% endfor %}{% endfor %}",
            "may not be nested",
        ),
        ("{% macro m() %}x{% endmacro %}", "'macro' is not allowed"),
        ("{{ lipsum(1000) }}", "not allowed"),
        ("{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}", "scene"),
    ],
)
def test_everything_beyond_placeholders_is_refused_before_it_runs(
    template: str, needle: str
) -> None:
    # Arithmetic, calls, assignments and unbounded loops could take the event loop for hours or
    # fill memory; a situation template needs none of them.
    description = refused(spec(template, metadata={"k": "abc"}))
    assert needle in description


def test_conditions_filters_and_scene_loops_work() -> None:
    s = spec(
        "{% if metadata.vip == 'yes' %}Bow to{% else %}Greet{% endif %} {{ metadata.name | upper }}"
        "{% for item in scene %}, {{ loop.index }}:{{ item.name | title }}{% endfor %}",
        metadata={"vip": "yes", "name": "ann"},
        scene=[SceneItem("red key"), SceneItem("door")],
    )
    assert render_situation(s) == "Bow to ANN, 1:Red Key, 2:Door"


def test_metadata_is_not_mutated_through_the_template() -> None:
    metadata = {"user_name": "Ann"}
    s = spec(
        "{{ metadata.update({'user_name': 'Eve'}) }}{{ metadata.user_name }}", metadata=metadata
    )
    assert "not allowed" in refused(s)
    assert metadata == {"user_name": "Ann"}
    assert s.metadata == {"user_name": "Ann"}
