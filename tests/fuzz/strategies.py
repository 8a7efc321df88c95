"""Hypothesis strategies built from protobuf descriptors, and corruptions of valid encodings.

`messages(descriptor, hints)` walks `descriptor.fields` and draws every field of every kind the
proto can declare: strings (short, unicode, NUL, templates, very long), integers (type bounds,
negatives, the limits parleyd documents), enums (known and unknown numbers), bools, floats
(NaN, infinities), bytes, repeated fields (none, a few, many), maps, nested messages, and the
well-known Timestamp, Duration, FieldMask and Struct with odd values (out of range, mixed signs,
NaN, deep nesting). A field may also be left unset. `hints` add domain values per field (by
full name, e.g. "parley.v1.TextInput.text", or by name, e.g. "session_id": real session ids), so
that a useful share of the requests gets past the first checks.

`corrupted(valid)` turns a valid message's bytes into bytes that are mostly not that message:
bit flips, truncation, insertions, deletions, bad tags and wire types, lengths that run past the
end, invalid UTF-8 in a string field, and unknown fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

FD = _descriptor.FieldDescriptor
Hints = Mapping[str, st.SearchStrategy[Any]]

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)
_U32 = (0, 2**32 - 1)
_U64 = (0, 2**64 - 1)
INT_BOUNDS: dict[int, tuple[int, int]] = {
    FD.TYPE_INT32: _I32,
    FD.TYPE_SINT32: _I32,
    FD.TYPE_SFIXED32: _I32,
    FD.TYPE_INT64: _I64,
    FD.TYPE_SINT64: _I64,
    FD.TYPE_SFIXED64: _I64,
    FD.TYPE_UINT32: _U32,
    FD.TYPE_FIXED32: _U32,
    FD.TYPE_UINT64: _U64,
    FD.TYPE_FIXED64: _U64,
}
# Type bounds and the numbers parleyd's limits are made of (page sizes, rates, chunk lengths).
_EDGES = (
    *(-(2**k) for k in (7, 8, 15, 16, 31, 32, 53, 63)),
    *(2**k for k in (7, 8, 15, 16, 31, 32, 53, 63)),
    *(2**k - 1 for k in (7, 8, 15, 16, 31, 32, 53, 63, 64)),
    -1,
    0,
    1,
    2,
    9,
    10,
    11,
    20,
    99,
    100,
    101,
    499,
    500,
    501,
    999,
    1_000,
    1_001,
    7_999,
    8_000,
    16_000,
    44_100,
    48_000,
    48_001,
    1_000_000_000,
    315_576_000_000,
    315_576_000_001,
)


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({e for e in (*_EDGES, lo, lo + 1, hi - 1, hi) if lo <= e <= hi})
    return st.one_of(
        st.sampled_from(edges),
        st.integers(max(lo, -1_000), min(hi, 100_000)),
        st.integers(lo, hi),
    )


UNICODE = st.characters(codec="utf-8")  # every code point but surrogates
IDENT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-.:"
SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n\r\x0b\x0c",
    "\u202e\u200b\u2028",
    "\ufeff",
    "\U0001f600\u200d\U0001f525",
    "e\u0301",
    "\uffff\U0010ffff",
    "null",
    "-1",
    "NaN",
    "%s%s%n%x",
    "'; DROP TABLE sessions; --",
    "../../../etc/passwd",
    "sess_",
    "sess_00000000000000000000000000",
    "sess_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    "sess_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "SESS_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "pk_",
    "pat_",
)
# Situation templates: allowed, refused and hostile ones (parleyd renders them when asked to).
TEMPLATES = (
    "Hello {{ metadata.user_name }}",
    "{{ user_id | upper }} at {{ agent_id }}",
    "{% if metadata.vip %}VIP{% else %}guest{% endif %}",
    "{% for item in scene %}{{ item.name }}: {{ item.description }}\n{% endfor %}",
    "{% for a in scene %}{% for b in scene %}x{% endfor %}{% endfor %}",
    "{{ nope }}",
    "{{ metadata.missing }}",
    "{{ metadata }}{{ scene }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ 'x' * 100000000 }}",
    "{{ range(100000000) | list }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% set x = 1 %}{{ x }}",
    "{{ lipsum(1000) }}",
    "{{ metadata.user_name | replace('a', 'aaaaaaaaaa') }}",
    "{{ ",
    "{% if %}",
    "{% for %}",
    "{% raw %}{{ x }}{% endraw %}",
    "{# comment",
    "{{ scene[0].name }}{{ scene[99] }}",
    "{{ metadata['a'] ~ metadata['b'] }}",
    "{{ 1 / 0 }}",
    "{{ dynamic_info | length }}",
)
# Long strings are a unit repeated: around the limits (128, 4096, 32768 characters) and past them.
_LONG_UNITS = ("x", "é", "\U0001f600", "ab c ", "\x00", "{{ metadata.k }}", "word ")
_LONG_COUNTS = (63, 64, 65, 127, 128, 129, 256, 257, 513, 1_024, 1_025, 4_096, 4_097, 32_769)


def long_strings() -> st.SearchStrategy[str]:
    return st.builds(
        lambda unit, n: unit * n, st.sampled_from(_LONG_UNITS), st.sampled_from(_LONG_COUNTS)
    )


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(alphabet=IDENT_ALPHABET, max_size=24),
        st.text(UNICODE, max_size=16),
        st.sampled_from(SPECIAL_STRINGS),
        st.sampled_from(TEMPLATES),
        long_strings(),
    )


def binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        # PCM-like: even and odd lengths around 10 ms .. 1 s at 8 .. 48 kHz (2 bytes a sample).
        st.builds(
            lambda n, fill: fill * n,
            st.sampled_from((1, 2, 159, 160, 320, 640, 641, 1_920, 3_200, 9_600, 32_000, 96_002)),
            st.sampled_from((b"\x00", b"\xff", b"\x7f")),
        ),
    )


def floats(width: int) -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from((0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 0.5, 1e-45)),
        st.floats(width=width),  # NaN and infinities included
    )


# -- well-known types ----------------------------------------------------------------------------

_TS_MIN, _TS_MAX = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31
_NANOS = st.one_of(
    st.sampled_from((0, 1, 999_999_999, 1_000_000_000, -1, -999_999_999, 2**31 - 1, -(2**31))),
    st.integers(0, 999_999_999),
)


def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    seconds = st.one_of(
        st.sampled_from((0, -1, 1, _TS_MIN, _TS_MAX, _TS_MIN - 1, _TS_MAX + 1, *_I64)),
        st.integers(1_600_000_000, 2_000_000_000),  # around now
        st.integers(*_I64),
    )
    return st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=_NANOS)


def durations() -> st.SearchStrategy[duration_pb2.Duration]:
    seconds = st.one_of(
        st.sampled_from((0, 1, -1, 59, 3_600, 604_800, 604_801, 315_576_000_000, *_I64)),
        st.integers(-100_000, 1_000_000),
        st.integers(*_I64),
    )
    return st.builds(duration_pb2.Duration, seconds=seconds, nanos=_NANOS)


def field_masks(known_paths: tuple[str, ...]) -> st.SearchStrategy[field_mask_pb2.FieldMask]:
    path = st.one_of(
        st.sampled_from(known_paths) if known_paths else st.nothing(),
        st.sampled_from(("", "*", "session.dynamic_info", "metadata.level", "a..b", "scene[0]")),
        strings(),
    )
    paths = st.one_of(
        st.lists(path, max_size=4),
        st.lists(path, min_size=30, max_size=80),  # many paths, duplicates included
    )
    return st.builds(field_mask_pb2.FieldMask, paths=paths)


_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    floats(64),
    st.text(UNICODE, max_size=8),
    long_strings(),
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(UNICODE, max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)


def _nested(depth: int) -> dict[str, Any]:
    value: Any = "deep"
    for _ in range(depth):
        value = {"k": [value]}
    return {"root": value}


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def structs() -> st.SearchStrategy[struct_pb2.Struct]:
    return st.one_of(
        st.dictionaries(st.text(UNICODE, max_size=8), _JSON, max_size=5),
        st.integers(1, 120).map(_nested),  # past protobuf's recursion limit of 100
        st.builds(lambda n: {f"k{i}": "v" * 64 for i in range(n)}, st.integers(60, 200)),
    ).map(_struct)


# -- messages ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Walk:
    """How a message is drawn: `tame` keeps to plausible values (hinted fields always set, short
    identifiers, small numbers, valid times, writable mask paths), so that requests get past the
    first checks; otherwise anything the field's type can hold."""

    hints: Hints
    known_paths: tuple[str, ...]
    tame_paths: tuple[str, ...]
    required: frozenset[str]
    tame: bool
    depth: int = 0

    def deeper(self) -> _Walk:
        return dataclasses.replace(self, depth=self.depth + 1)


_NOW_S = 1_750_000_000


def _tame_scalar(field: _descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FD.TYPE_STRING:
        return st.text(alphabet=IDENT_ALPHABET, min_size=1, max_size=12)
    if t == FD.TYPE_BYTES:
        return st.sampled_from((b"", b"\x00\x00" * 160, b"\x01\x00" * 320))
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return st.floats(0.0, 1.0)
    if t in INT_BOUNDS:
        return st.integers(0, 100)
    raise NotImplementedError(f"field {field.full_name} of type {t}")


def _scalar(field: _descriptor.FieldDescriptor, walk: _Walk) -> st.SearchStrategy[Any]:
    if walk.tame:
        return _tame_scalar(field)
    t = field.type
    if t == FD.TYPE_STRING:
        return strings()
    if t == FD.TYPE_BYTES:
        return binaries()
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # proto3 enums are open: numbers the schema does not name travel as they are.
        return st.one_of(st.sampled_from(known), integers(*_I32))
    if t == FD.TYPE_FLOAT:
        return floats(32)
    if t == FD.TYPE_DOUBLE:
        return floats(64)
    if t in INT_BOUNDS:
        return integers(*INT_BOUNDS[t])
    raise NotImplementedError(f"field {field.full_name} of type {t}")


def _is_map(field: _descriptor.FieldDescriptor) -> bool:
    return bool(
        field.type == FD.TYPE_MESSAGE
        and field.is_repeated
        and field.message_type.GetOptions().map_entry
    )


def _with_hint(
    field: _descriptor.FieldDescriptor, base: st.SearchStrategy[Any], walk: _Walk
) -> st.SearchStrategy[Any]:
    hint = walk.hints.get(field.full_name, walk.hints.get(field.name))
    if hint is None:
        return base
    return hint if walk.tame else st.one_of(hint, base)


def _field(field: _descriptor.FieldDescriptor, walk: _Walk) -> st.SearchStrategy[Any]:
    if _is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        keys = _with_hint(key_field, _scalar(key_field, walk), walk)
        values = _element(value_field, walk)
        if walk.tame:
            return st.dictionaries(keys, values, max_size=3)
        return st.one_of(
            st.dictionaries(keys, values, max_size=3),
            # Many pairs: around the documented limit of 64 and past it.
            st.dictionaries(keys, values, min_size=60, max_size=70),
        )
    element = _element(field, walk)
    if not field.is_repeated:
        return element
    if walk.tame:
        return st.lists(element, max_size=3)
    many = 75 if field.type == FD.TYPE_MESSAGE else 150
    return st.one_of(
        st.lists(element, max_size=3),
        # Many items: around the documented limits (64 scene items) and past them.
        st.lists(element, min_size=60, max_size=many),
    )


def _element(field: _descriptor.FieldDescriptor, walk: _Walk) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        base: st.SearchStrategy[Any] = _message(field.message_type, walk.deeper())
    else:
        base = _scalar(field, walk)
    return _with_hint(field, base, walk)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if _is_map(field):
            target = getattr(msg, name)
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        elif isinstance(value, Message):
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)  # a oneof member set later replaces an earlier one
    return msg


def _well_known(descriptor: _descriptor.Descriptor, walk: _Walk) -> st.SearchStrategy[Any] | None:
    name = descriptor.full_name
    if name == "google.protobuf.Timestamp":
        if walk.tame:
            return st.builds(
                timestamp_pb2.Timestamp,
                seconds=st.integers(_NOW_S - 86_400 * 400, _NOW_S + 86_400 * 400),
            )
        return timestamps()
    if name == "google.protobuf.Duration":
        if walk.tame:
            return st.builds(duration_pb2.Duration, seconds=st.integers(1, 7_200))
        return durations()
    if name == "google.protobuf.FieldMask":
        if walk.tame:
            paths = st.lists(st.sampled_from(walk.tame_paths or ("x",)), min_size=1, max_size=3)
            return st.builds(field_mask_pb2.FieldMask, paths=paths)
        return field_masks(walk.known_paths)
    if name == "google.protobuf.Struct":
        if walk.tame:
            small = st.dictionaries(st.text(IDENT_ALPHABET, max_size=6), _JSON_LEAVES, max_size=3)
            return small.map(_struct)
        return structs()
    return None


MAX_DEPTH = 4


def _message(descriptor: _descriptor.Descriptor, walk: _Walk) -> st.SearchStrategy[Message]:
    special = _well_known(descriptor, walk)
    if special is not None:
        return special
    cls = GetMessageClass(descriptor)
    if walk.depth > MAX_DEPTH:
        return st.just(cls())
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        always = walk.tame and f.name in walk.required and f.containing_oneof is None
        (required if always else optional)[f.name] = _field(f, walk)
    return st.fixed_dictionaries(required, optional=optional).map(lambda v: _build(cls, v))


def messages(
    descriptor: _descriptor.Descriptor,
    hints: Hints | None = None,
    *,
    known_paths: tuple[str, ...] = (),
    tame_paths: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    wild: bool = True,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`: mostly tame (plausible values that reach deep, the fields named
    in `required` always set), else (unless `wild` is false) wild (any subset of fields, each
    with any value its type can hold)."""
    walk = _Walk(hints or {}, known_paths, tame_paths, frozenset(required), tame=True)
    tame = _message(descriptor, walk)
    if not wild:
        return tame
    return st.one_of(tame, tame, _message(descriptor, dataclasses.replace(walk, tame=False)))


# -- corrupted encodings -------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def string_field_numbers(descriptor: _descriptor.Descriptor) -> tuple[int, ...]:
    return tuple(f.number for f in descriptor.fields if f.type == FD.TYPE_STRING)


def _evil_suffixes(descriptor: _descriptor.Descriptor) -> tuple[bytes, ...]:
    """Bytes that are wrong for a reason a parser must catch, for fields of `descriptor`."""
    numbers = [f.number for f in descriptor.fields] or [1]
    first = numbers[0]
    out = [
        _tag(0, 0) + b"\x01",  # field number 0
        _tag(first, 6),  # wire types 6 and 7 do not exist
        _tag(first, 7),
        _tag(first, 3),  # a group start that never ends
        _tag(first, 4),  # a group end with no start
        _tag(first, 2) + b"\xff\xff\xff\xff\x0f",  # a length far past the end
        _tag(first, 2) + b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an over-long varint
        _tag(first, 0) + b"\xff" * 11,  # a varint that never ends
        _tag(2**29 - 1, 0) + b"\x01",  # the largest field number, unknown here
        _tag(first, 5) + b"\x00",  # fixed32 cut short
        _tag(first, 1) + b"\x00\x00",  # fixed64 cut short
    ]
    for number in string_field_numbers(descriptor):
        for bad in (b"\xc3\x28", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80", b"\xc0\xaf"):
            out.append(_tag(number, 2) + _varint(len(bad)) + bad)  # invalid UTF-8
    for f in descriptor.fields:
        if f.type == FD.TYPE_MESSAGE and not f.is_repeated:
            # 200 levels of the same message field: past the parser's recursion limit.
            nested = b""
            for _ in range(200):
                nested = _tag(f.number, 2) + _varint(len(nested)) + nested
            out.append(nested)
            break
    return tuple(out)


def _mutate(data: bytes, ops: list[tuple[str, float, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, blob in ops:
        i = int(where * len(buf)) if buf else 0
        if op == "flip" and buf:
            buf[min(i, len(buf) - 1)] ^= blob[0] or 1
        elif op == "truncate":
            del buf[i:]
        elif op == "insert":
            buf[i:i] = blob
        elif op == "delete":
            del buf[i : i + len(blob)]
        elif op == "set" and buf:
            buf[min(i, len(buf) - 1)] = blob[0]
        elif op == "append":
            buf.extend(blob)
        elif op == "repeat":
            buf.extend(bytes(buf))
    return bytes(buf)


def _encoded(m: Message | bytes) -> bytes:
    return m if isinstance(m, bytes) else m.SerializeToString()


def corrupted(
    valid: st.SearchStrategy[Message] | st.SearchStrategy[bytes],
    descriptor: _descriptor.Descriptor,
) -> st.SearchStrategy[bytes]:
    """Encodings of messages from `valid` (messages or their bytes), damaged (the result may
    still parse, by chance)."""
    where = st.floats(0.0, 1.0, allow_nan=False)
    op = st.one_of(
        st.tuples(st.just("flip"), where, st.binary(min_size=1, max_size=1)),
        st.tuples(st.just("truncate"), where, st.just(b"")),
        st.tuples(st.just("insert"), where, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), where, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("set"), where, st.sampled_from((b"\xff", b"\x80", b"\x00", b"\x0f"))),
        st.tuples(st.just("append"), where, st.sampled_from(_evil_suffixes(descriptor))),
        st.tuples(st.just("append"), where, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("repeat"), where, st.just(b"")),
    )
    return st.builds(_mutate, valid.map(_encoded), st.lists(op, min_size=1, max_size=4))
