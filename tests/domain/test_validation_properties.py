"""Property tests of session validation against the documented limits (domain/limits.py).

An independent oracle says, for each field, whether a value is within its limits; for any
generated spec, `spec_violations` must name exactly the fields the oracle refuses — never a good
field, never miss a bad one — whatever the text holds (NUL, astral characters, long runs).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parleyd.domain import limits
from parleyd.domain.session import SceneItem, SessionSpec
from parleyd.domain.validation import spec_violations

KEY_MAX_MS = 3_600_000
ID_FIELDS = ("user_id", "profile", "avatar_id", "speaker_id")


def around(limit: int) -> st.SearchStrategy[int]:
    """Lengths that matter: empty, small, and at / just over the limit."""
    return st.one_of(st.integers(0, 8), st.integers(limit - 2, limit + 2))


def text_of(length: st.SearchStrategy[int], nul: bool = True) -> st.SearchStrategy[str]:
    alphabet = st.sampled_from(["a", "é", "語", "😀", " "] + (["\x00"] if nul else []))
    return length.flatmap(lambda n: st.text(alphabet, min_size=n, max_size=n))


specs = st.builds(
    SessionSpec,
    agent_id=text_of(around(limits.ID_FIELD_MAX_CHARS)),
    user_id=text_of(around(limits.ID_FIELD_MAX_CHARS)),
    profile=text_of(around(limits.ID_FIELD_MAX_CHARS)),
    avatar_id=text_of(around(limits.ID_FIELD_MAX_CHARS)),
    speaker_id=text_of(around(limits.ID_FIELD_MAX_CHARS)),
    dynamic_info=text_of(around(limits.DYNAMIC_INFO_MAX_CHARS)),
    scene=st.lists(
        st.builds(
            SceneItem,
            name=text_of(around(limits.SCENE_NAME_MAX_CHARS)),
            description=text_of(around(limits.SCENE_DESCRIPTION_MAX_CHARS)),
        ),
        max_size=3,
    ),
    max_duration_ms=st.one_of(st.none(), st.sampled_from([-1, 0, 1, KEY_MAX_MS, KEY_MAX_MS + 1])),
    resume_window_ms=st.one_of(
        st.none(),
        st.sampled_from(
            [
                limits.RESUME_WINDOW_MIN_MS - 1,
                limits.RESUME_WINDOW_MIN_MS,
                limits.RESUME_WINDOW_MAX_MS,
                limits.RESUME_WINDOW_MAX_MS + 1,
            ]
        ),
    ),
)


def refused_by_the_limits(spec: SessionSpec) -> set[str]:
    """The fields a reader of the limits would refuse (the oracle: no code shared)."""
    bad: set[str] = set()
    if not spec.agent_id.strip() or len(spec.agent_id) > limits.ID_FIELD_MAX_CHARS:
        bad.add("agent_id")
    for name in (*ID_FIELDS, "agent_id"):
        value = getattr(spec, name)
        if len(value) > limits.ID_FIELD_MAX_CHARS or "\x00" in value:
            bad.add(name)
    if len(spec.dynamic_info) > limits.DYNAMIC_INFO_MAX_CHARS or "\x00" in spec.dynamic_info:
        bad.add("dynamic_info")
    for i, item in enumerate(spec.scene):
        name_bad = not item.name.strip() or len(item.name) > limits.SCENE_NAME_MAX_CHARS
        if name_bad or "\x00" in item.name:
            bad.add(f"scene[{i}].name")
        if len(item.description) > limits.SCENE_DESCRIPTION_MAX_CHARS or "\x00" in item.description:
            bad.add(f"scene[{i}].description")
    if spec.max_duration_ms is not None and not 0 < spec.max_duration_ms <= KEY_MAX_MS:
        bad.add("max_duration")
    w = spec.resume_window_ms
    if w is not None and not limits.RESUME_WINDOW_MIN_MS <= w <= limits.RESUME_WINDOW_MAX_MS:
        bad.add("resume_window")
    return bad


FIELDS = (
    "agent_id",
    *ID_FIELDS,
    "dynamic_info",
    "scene",
    "max_duration",
    "resume_window",
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_violations_name_exactly_the_fields_over_their_limits(spec: SessionSpec) -> None:
    named = {
        v.field.removeprefix("session.")
        for v in spec_violations(spec, FIELDS, key_max_duration_ms=KEY_MAX_MS)
    }
    assert named == refused_by_the_limits(spec)


@settings(max_examples=100, deadline=None)
@given(specs)
def test_only_the_fields_asked_about_are_checked(spec: SessionSpec) -> None:
    # UpdateSession checks the mask's fields only: nothing else may be named.
    for field in FIELDS:
        named = {
            v.field.removeprefix("session.")
            for v in spec_violations(spec, [field], key_max_duration_ms=KEY_MAX_MS)
        }
        assert all(n == field or n.startswith(f"{field}[") for n in named), (field, named)
