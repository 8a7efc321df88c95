"""Rendering of `situation` templates from session fields, in Jinja2's sandbox.

A situation template fills placeholders — `{{ metadata.user_name }}`, `{{ user_id | upper }}`,
`{% if metadata.vip %}...{% endif %}`, `{% for item in scene %}...{% endfor %}` — and nothing
more. Before rendering, the template's syntax tree is checked against an allowlist: no calls,
arithmetic, assignments, macros or blocks; loops only over `scene` and never nested; only filters
that cannot grow their input. Rendering is therefore bounded by the template's size times the
64 scene items, and can never stall the server's event loop or fill its memory. The sandbox still
refuses attribute tricks (`__class__`), and StrictUndefined turns a placeholder with no value into
an error that names it.
"""

from __future__ import annotations

import re

from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment

from parleyd.domain.errors import InvalidArgument
from parleyd.domain.session import SessionSpec

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.globals.clear()  # no range(), lipsum(), cycler(), namespace(): templates read fields only

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
# Filters whose output is at most about as long as their input.
_ALLOWED_FILTERS = frozenset(
    {"default", "d", "lower", "upper", "title", "capitalize", "trim", "length", "count"}
    | {"first", "last", "string", "e", "escape"}
)
_ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "string", "number", "eq", "ne"})
_UNDEFINED_NAME = re.compile(r"'([^']+)' (?:is undefined|has no attribute '([^']+)')")


def render_situation(spec: SessionSpec, field: str = "session.situation") -> str:
    """The situation with its placeholders filled; unchanged when render_templates is off."""
    if not spec.render_templates:
        return spec.situation
    _check_syntax(spec.situation, field)
    context = {
        "metadata": dict(spec.metadata),
        "agent_id": spec.agent_id,
        "user_id": spec.user_id,
        "profile": spec.profile,
        "dynamic_info": spec.dynamic_info,
        "scene": [{"name": s.name, "description": s.description} for s in spec.scene],
    }
    try:
        return _ENV.from_string(spec.situation).render(context)
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


def _check_syntax(source: str, field: str) -> None:
    try:
        tree = _ENV.parse(source)
    except TemplateError as exc:
        raise InvalidArgument.field(field, f"template error: {exc.message or exc}") from None
    for node in tree.find_all(nodes.Node):
        problem = _problem(node)
        if problem:
            raise InvalidArgument.field(field, f"template error: {problem}")


def _problem(node: nodes.Node) -> str:
    if not isinstance(node, _ALLOWED_NODES):
        return (
            f"'{type(node).__name__.lower()}' is not allowed: templates fill placeholders, "
            "with if/else and loops over scene"
        )
    if isinstance(node, nodes.Filter) and node.name not in _ALLOWED_FILTERS:
        return f"filter '{node.name}' is not allowed"
    if isinstance(node, nodes.Test) and node.name not in _ALLOWED_TESTS:
        return f"test '{node.name}' is not allowed"
    if isinstance(node, nodes.For):
        if not (isinstance(node.iter, nodes.Name) and node.iter.name == "scene"):
            return "loops may only go over scene ({% for item in scene %})"
        if node.recursive or any(True for _ in node.find_all(nodes.For)):
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
