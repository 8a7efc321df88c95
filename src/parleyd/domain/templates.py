"""Rendering of `situation` templates from session fields, in Jinja2's sandbox.

The sandbox refuses attribute tricks (`__class__` and the like); StrictUndefined turns a
placeholder with no value into an error that names it, instead of silently rendering nothing.
"""

from __future__ import annotations

import re

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from parleyd.domain.errors import InvalidArgument
from parleyd.domain.session import SessionSpec

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
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


def _describe(exc: UndefinedError) -> str:
    text = str(exc.message or exc)
    m = _UNDEFINED_NAME.search(text)
    if not m:
        return f"({text})"
    if m.group(2):
        owner = "metadata" if "dict object" in m.group(1) else m.group(1)
        return f"'{owner}.{m.group(2)}'"
    return f"'{m.group(1)}'"
