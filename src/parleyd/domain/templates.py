"""Rendering of `situation` templates from session fields, in Jinja2's sandbox.

A situation template fills placeholders — `{{ metadata.user_name }}`, `{{ user_id | upper }}`,
`{% if metadata.vip %}...{% endif %}`, `{% for item in scene %}...{% endfor %}` — and nothing
more. Before rendering, the template's syntax tree is checked against an allowlist: no calls,
arithmetic, assignments, macros or blocks; loops only over `scene` and never nested; only filters
that cannot grow their input much, at most _FILTER_CHAIN_MAX in a row; no `self`; nothing nested
deeper than _NESTING_MAX. The sandbox still refuses attribute tricks (`__class__`), and
StrictUndefined turns a placeholder with no value into an error that names it.

Every render is bounded, whatever the template (each refusal is an InvalidArgument naming the
field and the limit):
- its input: the template is at most SITUATION_MAX_BYTES and _TOKENS_MAX template tokens (parsing
  and compiling cost about 20 µs a token), the scene at most SCENE_MAX_ITEMS items;
- its output: rendered piece by piece (`Template.generate`), and stopped as soon as the text so
  far passes RENDERED_SITUATION_MAX_BYTES or SITUATION_MAX_WORDS; the whole text is never built
  first;
- its work: TEMPLATE_LOOP_ITERATIONS_MAX loop turns over the whole render, and
  TEMPLATE_RENDER_BUDGET_MS of wall time from the start of parsing, checked at every output
  piece, loop turn, filter and attribute lookup (the longest step between two checks is
  compiling at most _TOKENS_MAX tokens, or one filter over a text of at most 64 KB).
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError, nodes
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

from parleyd.domain import limits
from parleyd.domain.errors import InvalidArgument
from parleyd.domain.session import SessionSpec
from parleyd.domain.validation import WordCounter, utf8_length

# Template tokens (names, operators, constants, tag delimiters, runs of text) one template may
# have: a generous situation template has a few dozen placeholders and conditions, about 10
# tokens each. 500 tokens parse and compile in about 10 ms (a full 64 KB of `{{a}}` took 900 ms).
_TOKENS_MAX = limits.TEMPLATE_TOKENS_MAX
# Depth of the syntax tree: `{% for %}{% if %}{{ item.name | upper }}` is 7 deep; a chain of
# 10 `or`s about 14. Python's own compiler gives up at 200 nested parentheses.
_NESTING_MAX = limits.TEMPLATE_NESTING_MAX
_FILTER_CHAIN_MAX = limits.TEMPLATE_FILTER_CHAIN_MAX
# Names a template may not read: the template itself and what only macros define.
_RESERVED_NAMES = frozenset({"self", "caller", "varargs", "kwargs"})


class _Refused(Exception):
    """A render stopped at one of the limits; `description` says which."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class _Meter:
    """The work limits of one render: wall time and loop turns."""

    __slots__ = ("_deadline", "_loops")

    def __init__(self) -> None:
        self._deadline = time.perf_counter() + limits.TEMPLATE_RENDER_BUDGET_MS / 1000
        self._loops = 0

    def tick(self) -> None:
        if time.perf_counter() > self._deadline:
            budget = limits.TEMPLATE_RENDER_BUDGET_MS
            raise _Refused(f"template takes over {budget} ms to render; the limit is {budget} ms")

    def loop_turn(self) -> None:
        self._loops += 1
        if self._loops > limits.TEMPLATE_LOOP_ITERATIONS_MAX:
            most = limits.TEMPLATE_LOOP_ITERATIONS_MAX
            raise _Refused(
                f"template loops run over {most} times in all; the limit is {most} loop turns"
            )
        self.tick()


# The meter of the render running in this context (renders are synchronous: set and reset
# around each one).
_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("_METER", default=None)


def _tick() -> None:
    meter = _METER.get()
    if meter is not None:
        meter.tick()


def _too_long() -> _Refused:
    most = limits.RENDERED_SITUATION_MAX_BYTES
    return _Refused(f"renders to over {most} bytes; the limit is {most} bytes (UTF-8)")


class _Scene(list[dict[str, str]]):
    """The scene as templates see it: a list whose every loop turn is counted."""

    __slots__ = ("_meter",)

    def __init__(self, items: list[dict[str, str]], meter: _Meter) -> None:
        super().__init__(items)
        self._meter = meter

    def __iter__(self) -> Iterator[dict[str, str]]:
        meter = self._meter
        for item in list.__iter__(self):
            meter.loop_turn()
            yield item


# Errors name the type of what a template read: "list object has no element 70", as before.
_Scene.__module__, _Scene.__name__ = "builtins", "list"


class _Environment(SandboxedEnvironment):
    """The sandbox, checking the time budget at every attribute and item lookup."""

    def getattr(self, obj: Any, attribute: str) -> Any | Undefined:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: str | Any) -> Any | Undefined:
        _tick()
        return super().getitem(obj, argument)


def _metered(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the time budget, and refuses a result too long to render."""

    @functools.wraps(fn)  # keeps jinja_pass_arg (what the filter is passed first)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        _tick()
        result = fn(*args, **kwargs)
        if isinstance(result, str) and len(result) > limits.RENDERED_SITUATION_MAX_BYTES:
            raise _too_long()
        return result

    return filtered


# Filters whose output is at most a few times as long as their input.
_ALLOWED_FILTERS = frozenset(
    {"default", "d", "lower", "upper", "title", "capitalize", "trim", "length", "count"}
    | {"first", "last", "string", "e", "escape"}
)
_ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "string", "number", "eq", "ne"})

_ENV = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.globals.clear()  # no range(), lipsum(), cycler(), namespace(): templates read fields only
_ENV.filters = {name: _metered(f) for name, f in _ENV.filters.items() if name in _ALLOWED_FILTERS}
_ENV.tests = {name: t for name, t in _ENV.tests.items() if name in _ALLOWED_TESTS}

# Syntax a situation template may use: output, field lookups, constants, conditions, filters.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Const,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Test,
    nodes.Filter,
    nodes.For,
)
_UNDEFINED_NAME = re.compile(r"'([^']+)' (?:is undefined|has no attribute '([^']+)')")


def render_situation(spec: SessionSpec, field: str = "session.situation") -> str:
    """The situation with its placeholders filled; unchanged when render_templates is off."""
    if not spec.render_templates:
        return spec.situation
    meter = _Meter()  # the budget covers parsing and compiling too
    _check_inputs(spec, field)
    template = _compile(spec.situation, field)
    token = _METER.set(meter)
    try:
        meter.tick()
        context = {
            "metadata": dict(spec.metadata),
            "agent_id": spec.agent_id,
            "user_id": spec.user_id,
            "profile": spec.profile,
            "dynamic_info": spec.dynamic_info,
            "scene": _Scene(
                [{"name": s.name, "description": s.description} for s in spec.scene], meter
            ),
        }
        return _render(template, context)
    except _Refused as exc:
        raise InvalidArgument.field(field, exc.description) from None
    except UndefinedError as exc:
        placeholder = _describe(exc)
        raise InvalidArgument.field(
            field, f"template placeholder {placeholder} has no value"
        ) from None
    except TemplateError as exc:
        raise InvalidArgument.field(field, f"template error: {exc.message or exc}") from None
    except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
        # The caller wrote the template: its mistakes are never internal errors.
        raise InvalidArgument.field(field, f"template error: {exc}") from None
    finally:
        _METER.reset(token)


def _render(template: Template, context: dict[str, Any]) -> str:
    """The output, piece by piece, stopped at the first piece past a size or word limit."""
    max_bytes = limits.RENDERED_SITUATION_MAX_BYTES
    out: list[str] = []
    size = 0
    words = WordCounter()
    pieces = cast(Generator[str, None, None], template.generate(context))  # a generator indeed
    try:
        for piece in pieces:
            if len(piece) > max_bytes:  # no need to encode it: a character is at least a byte
                raise _too_long()
            size += utf8_length(piece)
            if size > max_bytes:
                raise _too_long()
            if words.add(piece) > limits.SITUATION_MAX_WORDS:
                raise _too_many_words()
            _tick()
            out.append(piece)
    finally:
        pieces.close()
    if words.total() > limits.SITUATION_MAX_WORDS:
        raise _too_many_words()
    return "".join(out)


def _too_many_words() -> _Refused:
    most = limits.SITUATION_MAX_WORDS
    return _Refused(f"renders to over {most} words; the limit is {most} words")


def _check_inputs(spec: SessionSpec, field: str) -> None:
    size = utf8_length(spec.situation)
    if size > limits.SITUATION_MAX_BYTES:
        raise InvalidArgument.field(
            field, f"is {size} bytes in UTF-8; the limit is {limits.SITUATION_MAX_BYTES} bytes"
        )
    if len(spec.scene) > limits.SCENE_MAX_ITEMS:
        raise InvalidArgument.field(
            field,
            f"template input scene has {len(spec.scene)} items; "
            f"the limit is {limits.SCENE_MAX_ITEMS}",
        )
    if len(spec.metadata) > limits.METADATA_MAX_PAIRS:
        raise InvalidArgument.field(
            field,
            f"template input metadata has {len(spec.metadata)} pairs; "
            f"the limit is {limits.METADATA_MAX_PAIRS}",
        )


def _compile(source: str, field: str) -> Template:
    """The template, parsed once, checked against the allowlist, compiled."""
    try:
        for tokens, _ in enumerate(_ENV.lexer.tokenize(source), start=1):
            if tokens > _TOKENS_MAX:
                raise InvalidArgument.field(
                    field,
                    f"template has over {_TOKENS_MAX} tokens (names, operators, constants, "
                    f"tags, runs of text); the limit is {_TOKENS_MAX}",
                )
        tree = _ENV.parse(source)
        _check_tree(tree, field)
        code = _ENV.compile(tree)
    except TemplateError as exc:
        raise InvalidArgument.field(field, f"template error: {exc.message or exc}") from None
    except RecursionError:  # the parser recurses once per nested bracket
        raise InvalidArgument.field(field, _nesting_problem()) from None
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None))


def _nesting_problem() -> str:
    return f"template error: nested over {_NESTING_MAX} levels deep; the limit is {_NESTING_MAX}"


def _check_tree(tree: nodes.Template, field: str) -> None:
    # Depth first, parents before children, without recursion (the tree may be deep).
    stack: list[tuple[nodes.Node, int, bool]] = [(tree, 1, False)]
    while stack:
        node, depth, in_loop = stack.pop()
        if depth > _NESTING_MAX:
            raise InvalidArgument.field(field, _nesting_problem())
        problem = _problem(node, in_loop)
        if problem:
            raise InvalidArgument.field(field, f"template error: {problem}")
        inner = in_loop or isinstance(node, nodes.For)
        children = list(node.iter_child_nodes())
        stack.extend((child, depth + 1, inner) for child in reversed(children))


def _problem(node: nodes.Node, in_loop: bool) -> str:
    if not isinstance(node, _ALLOWED_NODES):
        return (
            f"'{type(node).__name__.lower()}' is not allowed: templates fill placeholders, "
            "with if/else and loops over scene"
        )
    if isinstance(node, nodes.Filter):
        if node.name not in _ALLOWED_FILTERS:
            return f"filter '{node.name}' is not allowed"
        chain, inner = 1, node.node
        while isinstance(inner, nodes.Filter):
            chain, inner = chain + 1, inner.node
        if chain > _FILTER_CHAIN_MAX:
            return f"over {_FILTER_CHAIN_MAX} filters in a row; the limit is {_FILTER_CHAIN_MAX}"
    if isinstance(node, nodes.Test) and node.name not in _ALLOWED_TESTS:
        return f"test '{node.name}' is not allowed"
    if isinstance(node, nodes.Name) and node.name in _RESERVED_NAMES:
        return f"'{node.name}' is not allowed: templates read session fields only"
    if isinstance(node, nodes.For):
        if not (isinstance(node.iter, nodes.Name) and node.iter.name == "scene"):
            return "loops may only go over scene ({% for item in scene %})"
        if node.recursive or in_loop:
            return "loops may not be nested"
    return ""


def _describe(exc: UndefinedError) -> str:
    text = str(exc.message or exc)
    m = _UNDEFINED_NAME.search(text)
    if not m:
        return f"({text})"
    if m.group(2):
        owner = "metadata" if "dict object" in m.group(1) else m.group(1)
        return f"'{owner}.{m.group(2)}'"
    return f"'{m.group(1)}'"
