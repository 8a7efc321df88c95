"""Rendering of `situation` templates from session fields, in Jinja2's sandbox.

The sandbox refuses attribute tricks (`__class__` and the like); StrictUndefined turns a
placeholder with no value into an error that names it, instead of silently rendering nothing.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from parleyd.domain import limits
from parleyd.domain.errors import InvalidArgument
from parleyd.domain.session import SessionSpec

# Largest integer `*` or `**` may make (Python will not even print an int beyond ~14,000 bits).
_MAX_INT_BITS = 16_384


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, with `*` and `**` refused when the result would be huge.

    Without this, "{{ 'a' * 10**9 }}" or "{{ 2 ** (10 ** 12) }}" makes the server build gigabytes
    or compute for hours. Intercepted operators are also never constant-folded at compile time.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            if abs(left) > 1 and abs(left).bit_length() * right > _MAX_INT_BITS:
                raise ValueError("the result of ** is too large")
        elif operator == "*":
            if _is_int(left) and _is_int(right):
                if abs(left).bit_length() + abs(right).bit_length() > _MAX_INT_BITS:
                    raise ValueError("the result of * is too large")
            else:
                seq, times = (left, right) if _is_int(right) else (right, left)
                if (
                    isinstance(seq, str | list | tuple)
                    and _is_int(times)
                    and len(seq) * times > limits.SITUATION_MAX_CHARS
                ):
                    raise ValueError("the result of * is too long")
        return super().call_binop(context, operator, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


_ENV = _BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_UNDEFINED_NAME = re.compile(r"'([^']+)' (?:is undefined|has no attribute '([^']+)')")


def render_situation(spec: SessionSpec, field: str = "session.situation") -> str:
    """The situation with its placeholders filled; unchanged when render_templates is off."""
    if not spec.render_templates:
        return spec.situation
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
        raise InvalidArgument.field(
            field, f"template placeholder {_describe(exc)} has no value"
        ) from None
    except TemplateError as exc:
        raise InvalidArgument.field(field, f"template error: {exc.message or exc}") from None
    except (ArithmeticError, ValueError, TypeError, LookupError, RecursionError) as exc:
        # The caller's template failed while running ({{ 1/0 }}, {{ range(10**9) }}, ...): that is
        # the caller's doing, so INVALID_ARGUMENT rather than an internal error.
        raise InvalidArgument.field(
            field, f"template error: {type(exc).__name__}: {exc}"[:300]
        ) from None


def _describe(exc: UndefinedError) -> str:
    text = str(exc.message or exc)
    m = _UNDEFINED_NAME.search(text)
    if not m:
        return f"({text})"
    if m.group(2):
        owner = "metadata" if "dict object" in m.group(1) else m.group(1)
        return f"'{owner}.{m.group(2)}'"
    return f"'{m.group(1)}'"
