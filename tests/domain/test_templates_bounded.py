"""Every situation render is bounded: input, output, loop turns and wall time.

The repro of issue 11: a 28 KB situation of 625 sequential loops over a 64-item scene of 1 KB
descriptions rendered to 41 MB before its word count was looked at.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parleyd.domain import limits
from parleyd.domain.errors import InvalidArgument
from parleyd.domain.session import SceneItem, SessionSpec
from parleyd.domain.templates import render_situation
from parleyd.domain.validation import utf8_length, word_count

FIELD = "session.situation"
SCENE_1KB = [SceneItem(f"item{i}", "d" * 1_000) for i in range(64)]
BIG_METADATA = {f"key{i:02}": "&'<" * 170 for i in range(64)}  # 64 values of 510 characters


def spec(situation: str, **kw: object) -> SessionSpec:
    s = SessionSpec(agent_id="innkeeper", situation=situation, render_templates=True)
    for name, value in kw.items():
        setattr(s, name, value)
    return s


def refusal(s: SessionSpec) -> str:
    with pytest.raises(InvalidArgument) as info:
        render_situation(s)
    assert [v.field for v in info.value.violations] == [FIELD]
    return info.value.violations[0].description


def timed_refusal(s: SessionSpec) -> tuple[str, float]:
    start = time.perf_counter()
    description = refusal(s)
    return description, (time.perf_counter() - start) * 1000


# -- the repro and its kin ---------------------------------------------------------------


def test_the_41_mb_repro_is_refused_at_once() -> None:
    source = "{%for i in scene%}{{i.description}}{%endfor%}" * 625
    assert len(source) == 28_125
    assert len(source.split()) < limits.SITUATION_MAX_WORDS  # the old word count let it through
    description, ms = timed_refusal(spec(source, scene=SCENE_1KB))
    assert "tokens" in description
    assert "the limit is 500" in description
    assert ms < limits.TEMPLATE_RENDER_BUDGET_MS


def test_output_stops_at_the_byte_cap_without_building_the_whole_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 30 loops of 64 KB each: 1.9 MB if rendered, under the token limit. (Tracing memory slows
    # Python down several times: the time budget is lifted for it.)
    monkeypatch.setattr(limits, "TEMPLATE_RENDER_BUDGET_MS", 60_000)
    source = "{% for i in scene %}{{ i.description }}{% endfor %}" * 30
    tracemalloc.start()
    try:
        description, _ = timed_refusal(spec(source, scene=SCENE_1KB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert description == (
        f"renders to over {limits.RENDERED_SITUATION_MAX_BYTES} bytes; "
        f"the limit is {limits.RENDERED_SITUATION_MAX_BYTES} bytes (UTF-8)"
    )
    assert peak < 1_000_000  # the 1.9 MB was never built


def test_output_stops_at_the_word_limit() -> None:
    words = spec("{% for i in scene %}" + "word " * 100 + "{% endfor %}", scene=SCENE_1KB)
    description = refusal(words)
    assert description == (
        f"renders to over {limits.SITUATION_MAX_WORDS} words; "
        f"the limit is {limits.SITUATION_MAX_WORDS} words"
    )
    # CJK has no spaces to count by: each character is a word.
    cjk = spec("{% for i in scene %}" + "字" * 100 + "{% endfor %}", scene=SCENE_1KB)
    assert "words" in refusal(cjk)


def test_a_render_at_the_limits_is_accepted() -> None:
    text = "{% for i in scene %}" + "word " * 39 + "{% endfor %}"  # 64 x 39 = 2,496 words
    out = render_situation(spec(text, scene=SCENE_1KB))
    assert word_count(out) == 2_496


def test_loop_turns_are_counted_over_the_whole_render() -> None:
    # 16 loops x 64 items = 1,024 turns that output nothing.
    description = refusal(spec("{% for i in scene %}{% endfor %}" * 16, scene=SCENE_1KB))
    most = limits.TEMPLATE_LOOP_ITERATIONS_MAX
    assert (
        description
        == f"template loops run over {most} times in all; the limit is {most} loop turns"
    )
    render_situation(spec("{% for i in scene %}{% endfor %}" * 15, scene=SCENE_1KB))  # 960


def test_wall_time_is_bounded() -> None:
    # Every turn runs 35 conditions over the 30 KB string of the metadata: 64 turns would take
    # hundreds of milliseconds, and print nothing.
    body = "{% if metadata | string | lower == 'x' %}{% endif %}" * 35
    s = spec("{% for i in scene %}" + body + "{% endfor %}", scene=SCENE_1KB, metadata=BIG_METADATA)
    description, ms = timed_refusal(s)
    budget = limits.TEMPLATE_RENDER_BUDGET_MS
    assert description == f"template takes over {budget} ms to render; the limit is {budget} ms"
    assert ms < budget + 50


def test_the_budget_covers_parsing_and_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "TEMPLATE_RENDER_BUDGET_MS", 0)
    assert "takes over 0 ms" in refusal(spec("Hello {{ agent_id }}"))


def test_one_filter_cannot_make_a_huge_piece() -> None:
    # `e` makes each of & ' < five characters: 160 KB from the 32 KB of metadata.
    assert "bytes" in refusal(spec("{{ metadata | string | e }}", metadata=BIG_METADATA))


def test_template_size_is_checked_before_parsing() -> None:
    too_big = "x" * (limits.SITUATION_MAX_BYTES + 1)
    assert refusal(spec(too_big)) == (
        f"is {limits.SITUATION_MAX_BYTES + 1} bytes in UTF-8; "
        f"the limit is {limits.SITUATION_MAX_BYTES} bytes"
    )
    # Plain text of any length up to the limit is one token.
    plain = ("p" * 30 + " ") * 2_000
    assert render_situation(spec(plain)) == plain


def test_too_many_tokens_are_refused_before_parsing() -> None:
    description, ms = timed_refusal(spec("{{a}}" * 13_000))  # 65,000 bytes
    assert description.startswith("template has over 500 tokens")
    assert ms < limits.TEMPLATE_RENDER_BUDGET_MS
    render_situation(spec("{{ agent_id }}" * 150))  # 450 tokens


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{{ self }}", "'self' is not allowed"),
        ("{{ self.__class__ }}", "'self' is not allowed"),
        ("{{ caller }}", "'caller' is not allowed"),
        ("{{ kwargs }}", "'kwargs' is not allowed"),
        ("{% for i in scene recursive %}{{ loop(i) }}{% endfor %}", "may not be nested"),
        ("{% for i in scene recursive %}x{% endfor %}", "may not be nested"),
        ("{% include 'x' %}", "'include' is not allowed"),
        ("{% extends 'x' %}", "'extends' is not allowed"),
        ("{% import 'x' as y %}", "'import' is not allowed"),
        ("{% block b %}{% endblock %}", "'block' is not allowed"),
        ("{% with a = 1 %}{% endwith %}", "not allowed"),
        ("{% filter upper %}x{% endfilter %}", "not allowed"),
        ("{{ agent_id | lower | upper | lower | upper | lower }}", "over 4 filters in a row"),
        ("{{ " + " or ".join(["agent_id"] * 40) + " }}", "nested over 24 levels"),
        ("{% if agent_id %}" * 30 + "x" + "{% endif %}" * 30, "nested over 24 levels"),
        ("{{ " + "(" * 240 + "agent_id" + ")" * 240 + " }}", "nested"),
        ("{{ " + "(" * 2_000 + "agent_id" + ")" * 2_000 + " }}", "tokens"),
    ],
)
def test_what_no_template_needs_is_refused(template: str, needle: str) -> None:
    assert needle in refusal(spec(template))


def test_reasonable_templates_still_render() -> None:
    s = spec(
        "You are {{ agent_id | title }}, talking to {{ metadata.name | default('a traveller') }}."
        "{% if metadata.vip == 'yes' and user_id %} Treat {{ user_id }} as royalty."
        "{% elif metadata.vip is defined %} Be polite.{% else %} Be brief.{% endif %}"
        " Around you:{% for item in scene %} {{ loop.index }}. {{ item.name | upper }}"
        "{% if item.description %} ({{ item.description | trim }}){% endif %}"
        "{% if not loop.last %};{% endif %}{% endfor %}. {{ dynamic_info }}",
        user_id="u-7",
        metadata={"vip": "yes", "name": "Ann"},
        scene=[SceneItem("lamp", " flickers "), SceneItem("door")],
        dynamic_info="It rains.",
    )
    assert render_situation(s) == (
        "You are Innkeeper, talking to Ann. Treat u-7 as royalty."
        " Around you: 1. LAMP (flickers); 2. DOOR. It rains."
    )


# -- the property: nothing the grammar allows renders above a cap or runs above the budget -------

NAMES = ["agent_id", "user_id", "profile", "dynamic_info", "metadata", "scene"]
META_KEYS = ["key00", "key01", "key63", "missing"]
FILTERS = ["lower", "upper", "title", "capitalize", "trim", "string", "e", "length", "first"]
FILTERS += ["last", "count", "default('x')", "d(metadata)"]


@st.composite
def expressions(draw: st.DrawFn, in_loop: bool) -> str:
    names = [*NAMES, *(f"metadata.{k}" for k in META_KEYS), "scene[0].name", "scene[63]"]
    if in_loop:
        names += ["item", "item.name", "item.description", "loop.index", "loop.last"]
    expr = draw(st.sampled_from(names))
    for f in draw(st.lists(st.sampled_from(FILTERS), max_size=4)):
        expr = f"{expr} | {f}"
    return expr


@st.composite
def conditions(draw: st.DrawFn, in_loop: bool) -> str:
    left = draw(expressions(in_loop))
    return draw(
        st.sampled_from(
            [
                left,
                f"not {left}",
                f"{left} == 'x'",
                f"'d' in {left}",
                f"{left} is defined",
                f"{left} and {draw(expressions(in_loop))}",
                f"{left} or {draw(expressions(in_loop))}",
            ]
        )
    )


TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="{}%#"),
    max_size=40,
) | st.sampled_from(["word " * 50, "字" * 100, "x" * 200, "\u200d".join(["w"] * 60)])


@st.composite
def blocks(draw: st.DrawFn, depth: int, in_loop: bool) -> str:
    kinds = ["text", "placeholder"] + (["if", "for"] if depth < 3 else [])
    if in_loop and "for" in kinds:
        kinds.remove("for")
    kind = draw(st.sampled_from(kinds))
    if kind == "text":
        return draw(TEXT)
    if kind == "placeholder":
        return "{{ " + draw(expressions(in_loop)) + " }}"
    body = "".join(draw(st.lists(blocks(depth + 1, in_loop or kind == "for"), max_size=4)))
    if kind == "for":
        return "{% for item in scene %}" + body + "{% endfor %}"
    other = "".join(draw(st.lists(blocks(depth + 1, in_loop), max_size=2)))
    return (
        "{% if " + draw(conditions(in_loop)) + " %}" + body + "{% else %}" + other + "{% endif %}"
    )


@st.composite
def inputs(draw: st.DrawFn) -> SessionSpec:
    source = "".join(draw(st.lists(blocks(0, False), min_size=1, max_size=12)))
    source *= draw(st.sampled_from([1, 1, 2, 5, 20]))  # sequential copies, as in the repro
    fill = draw(st.sampled_from(["d", "word ", "字", "&", "é\u0301"]))
    length = draw(st.sampled_from([0, 10, 200, 1_024]))
    items = draw(st.sampled_from([0, 64]) | st.integers(0, limits.SCENE_MAX_ITEMS))
    scene = [SceneItem(f"item{i}", (fill * length)[:length]) for i in range(items)]
    pairs = draw(st.integers(min_value=0, max_value=limits.METADATA_MAX_PAIRS - 3))
    value = (fill * 512)[: draw(st.sampled_from([0, 5, 512]))]
    metadata = {f"key{i:02}": value for i in (0, 1, 63, *range(2, 2 + pairs))}
    return spec(
        source,
        scene=scene,
        metadata=metadata,
        dynamic_info=(fill * 4_096)[:4_096],
        user_id="u" * 128,
    )


@settings(max_examples=150, deadline=None)
@given(inputs())
def test_no_template_renders_above_the_caps_or_runs_above_the_budget(s: SessionSpec) -> None:
    # This thread's CPU time, without garbage collection (a pause of the whole process, not
    # work of the render): a busy machine does not inflate it.
    gc.disable()
    start = time.thread_time()
    try:
        out = render_situation(s)
    except InvalidArgument as exc:
        refused_on = [v.field for v in exc.violations]
        out = ""
    else:
        refused_on = []
    finally:
        cpu_ms = (time.thread_time() - start) * 1000
        gc.enable()
    assert refused_on in ([], [FIELD])
    assert utf8_length(out) <= limits.RENDERED_SITUATION_MAX_BYTES
    assert word_count(out) <= limits.SITUATION_MAX_WORDS
    # Past the deadline a render stops at its next step; the longest step is compiling.
    assert cpu_ms <= limits.TEMPLATE_RENDER_BUDGET_MS + 25, s.situation[:200]
