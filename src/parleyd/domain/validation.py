"""Checks of caller-supplied session fields: every problem is reported, each naming its field."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from parleyd.domain import limits
from parleyd.domain.errors import FieldViolation, InvalidArgument
from parleyd.domain.ids import is_session_id
from parleyd.domain.session import SessionSpec

_NUL = "\x00"
_NUL_MESSAGE = "must not contain NUL (U+0000) characters"


# -- words ------------------------------------------------------------------------------------
#
# Words are counted the way a reader would, after Unicode word segmentation (UAX #29), so that no
# spelling fits more text under a word limit than the limit means:
# - a word is a run of letters, digits and `_`; combining marks and variation selectors belong to
#   the character they follow; an apostrophe or full stop between letters (`don't`, `e.g`) and a
#   comma between digits (`1,000`) keep a word whole. Anything else ends it: spaces,
#   punctuation, symbols, and zero-width and other format characters (a zero-width joiner never
#   joins two words into one);
# - each Han, Hiragana, Katakana, Hangul, Bopomofo or Yi character is a word of its own (these
#   scripts need no spaces), and so is each emoji;
# - Thai, Lao, Khmer and Myanmar write words without spaces too: a run of them counts as one word
#   per started _SPACELESS_CHARS_PER_WORD characters (about a word's length);
# - no real word is longer than _WORD_MAX_CHARS: a longer run counts as one word per started
#   _WORD_MAX_CHARS characters, and runs of anything else that is not a space (punctuation,
#   symbols, format characters, combining marks) as one per full _WORD_MAX_CHARS;
# - Unicode tag characters (U+E0020..E007E: invisible, yet read by language models as the ASCII
#   they shadow) count as that ASCII.
_WORD_MAX_CHARS = 32
_SPACELESS_CHARS_PER_WORD = 5

_IDEOGRAPHS = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK and Kangxi radicals
    (0x3005, 0x3007),
    (0x3021, 0x3029),
    (0x3038, 0x303C),
    (0x3041, 0x3096),  # Hiragana (U+3099..309C, the sound marks, belong to the kana before)
    (0x309D, 0x30FA),  # Katakana
    (0x30FC, 0x30FF),
    (0x3105, 0x312F),  # Bopomofo
    (0x3131, 0x318E),  # Hangul compatibility jamo
    (0x31A0, 0x31BF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),  # CJK unified ideographs, extension A
    (0x4E00, 0x9FFF),
    (0xA000, 0xA48F),  # Yi syllables
    (0xA960, 0xA97F),
    (0xAC00, 0xD7FF),  # Hangul syllables, jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9D),  # halfwidth Katakana
    (0xFFA0, 0xFFDC),  # halfwidth Hangul
    (0x16FE0, 0x16FFF),
    (0x17000, 0x18CFF),  # Tangut, Khitan
    (0x1B000, 0x1B2FF),  # Kana supplement and extensions, Nushu
    (0x20000, 0x3FFFF),  # CJK extensions B and later (astral planes 2 and 3)
)
_EMOJI = ((0x2600, 0x27BF), (0x1F000, 0x1F3FA), (0x1F400, 0x1FAFF))
_EMOJI_MODIFIERS = ((0x1F3FB, 0x1F3FF),)  # skin tones: they belong to the emoji before
_SPACELESS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x1980, 0x1A1F),  # New Tai Lue, Khmer symbols
    (0x1A20, 0x1AAF),  # Tai Tham
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAADF),  # Myanmar extended A, Tai Viet
)
_TAGS = (0xE0020, 0xE007E)


def _within(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _marks() -> tuple[tuple[int, int], ...]:
    """Ranges of combining marks (Mn, Mc, Me) and variation selectors, but those of the
    spaceless scripts (which count by length) and of the ideographs."""
    found: list[tuple[int, int]] = []
    start = last = -1
    category = unicodedata.category
    # Planes 0 and 1 hold every mark but the variation selectors supplement (added below). A
    # range goes on over unassigned code points between marks: fewer ranges, a faster regex.
    for cp in range(0x20000):
        c = category(chr(cp))
        if c[0] == "M" and not _within(cp, _SPACELESS + _IDEOGRAPHS):
            if start < 0:
                start = cp
            last = cp
        elif c != "Cn" and start >= 0:
            found.append((start, last))
            start = -1
    return (*found, (0xE0100, 0xE01EF), *_EMOJI_MODIFIERS)


def _cls(ranges: tuple[tuple[int, int], ...]) -> str:
    """The ranges as the body of a regex character class."""
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


_MARKS = _marks()
_ASTRAL_RE = re.compile("[\\U00010000-\\U0010ffff]")
# Character classes with astral ranges are searched range by range: each has a plane 0 variant
# for text without astral characters.
_MARK_CLS = {False: _cls(tuple(r for r in _MARKS if r[1] <= 0xFFFF)), True: _cls(_MARKS)}
_MARK_RE = {a: re.compile(f"[{c}]") for a, c in _MARK_CLS.items()}
_MARK_RUN_RE = {a: re.compile(f"[{c}]{{{_WORD_MAX_CHARS},}}") for a, c in _MARK_CLS.items()}
_IDEOGRAPH_RE = {
    False: re.compile(f"[{_cls(tuple(r for r in _IDEOGRAPHS + _EMOJI if r[1] <= 0xFFFF))}]"),
    True: re.compile(f"[{_cls(_IDEOGRAPHS + _EMOJI)}]"),
}
_SPACELESS_RE = re.compile(f"[{_cls(_SPACELESS)}]+")
_TAG_RE = re.compile(f"[{_cls((_TAGS,))}]")
_JOINERS = "'.\\u00b7\\u05f3\\u05f4\\u2018\\u2019\\u2027\\ufe52\\uff07\\uff0e"  # between letters
_NUMBER_JOINERS = ",;\\u066b\\u066c\\ufe50\\ufe54\\uff0c\\uff1b"  # between digits
_WORD_RE = re.compile(rf"\w+(?:(?:[{_JOINERS}]|(?<=\d)[{_NUMBER_JOINERS}](?=\d))\w+)*")
_OTHER_RUN_RE = re.compile(rf"[^\s\w]{{{_WORD_MAX_CHARS},}}")
_LAST_SPACE_RE = re.compile(r"\s(?=\S*\Z)")


def _untag(m: re.Match[str]) -> str:
    return chr(ord(m.group()) - 0xE0000)


def word_count(text: str) -> int:
    """Words in `text` as a reader counts them (see above)."""
    words = 0
    if not text.isascii():
        astral = _ASTRAL_RE.search(text) is not None
        if _MARK_RE[astral].search(text):
            # Long runs of marks carry text of their own (e.g. in variation selectors).
            words += sum(len(r) // _WORD_MAX_CHARS for r in _MARK_RUN_RE[astral].findall(text))
            text = _MARK_RE[astral].sub("", text)
        if astral and _TAG_RE.search(text):
            text = _TAG_RE.sub(_untag, text)
        text, ideographs = _IDEOGRAPH_RE[astral].subn(" ", text)
        words += ideographs
        spaceless = _SPACELESS_RE.findall(text)
        if spaceless:
            words += sum(1 + (len(r) - 1) // _SPACELESS_CHARS_PER_WORD for r in spaceless)
            text = _SPACELESS_RE.sub(" ", text)
    runs = _WORD_RE.findall(text)
    words += len(runs)
    words += sum((len(r) - 1) // _WORD_MAX_CHARS for r in runs if len(r) > _WORD_MAX_CHARS)
    words += sum(len(r) // _WORD_MAX_CHARS for r in _OTHER_RUN_RE.findall(text))
    return words


class WordCounter:
    """Counts the words of text that arrives in pieces (a template's output) as `word_count`
    counts the whole, in time linear in the text. No word spans a space: the text up to the last
    space is counted once, about every _BATCH_CHARS; the part after it waits for more, and a long
    one is counted ahead each time it has doubled (a count can only grow as the text grows)."""

    _BATCH_CHARS = 1_024

    def __init__(self) -> None:
        self._counted = 0  # words of the text up to the last space counted
        self._pending: list[str] = []  # the text after it
        self._pending_chars = 0
        self._pending_words = 0  # words of the pending text when it was last counted ahead
        self._next_count_at = self._BATCH_CHARS

    @property
    def words(self) -> int:
        """At most the count of all text added so far, and at least all but the last
        _BATCH_CHARS characters' worth (or half a run without spaces)."""
        return self._counted + self._pending_words

    def add(self, piece: str) -> int:
        """Adds `piece`; returns `words`."""
        self._pending.append(piece)
        self._pending_chars += len(piece)
        if self._pending_chars >= self._next_count_at:
            self._count_pending()
        return self.words

    def total(self) -> int:
        """The count of all text added."""
        return self._counted + word_count("".join(self._pending))

    def _count_pending(self) -> None:
        text = "".join(self._pending)
        m = _LAST_SPACE_RE.search(text)
        if m is None:
            self._pending = [text]
            self._pending_words = word_count(text)
            self._next_count_at = 2 * len(text)
            return
        self._counted += word_count(text[: m.end()])
        rest = text[m.end() :]
        self._pending = [rest]
        self._pending_chars = len(rest)
        self._pending_words = 0
        self._next_count_at = len(rest) + self._BATCH_CHARS


def utf8_length(text: str) -> int:
    """Bytes of `text` in UTF-8."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_session_id(value: str, field: str = "session_id") -> None:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not is_session_id(value):
        raise InvalidArgument.field(field, "must be 'sess_' followed by a 26-character ULID")


def spec_violations(
    spec: SessionSpec,
    fields: Iterable[str],
    *,
    prefix: str = "session.",
    key_max_duration_ms: int,
) -> list[FieldViolation]:
    """Violations among the named (proto) fields of `spec`."""
    out: list[FieldViolation] = []
    wanted = set(fields)

    def bad(name: str, description: str) -> None:
        out.append(FieldViolation(prefix + name, description))

    def short_text(name: str, value: str, required: bool = False) -> None:
        if required and not value.strip():
            bad(name, "is required")
        elif len(value) > limits.ID_FIELD_MAX_CHARS:
            bad(name, f"is {len(value)} characters; the limit is {limits.ID_FIELD_MAX_CHARS}")

    if "agent_id" in wanted:
        short_text("agent_id", spec.agent_id, required=True)
    for name in ("user_id", "profile", "avatar_id", "speaker_id"):
        if name in wanted:
            short_text(name, getattr(spec, name))
    if "situation" in wanted:
        # Sizes first: counting the words of a 4 MB text would itself take a while.
        size = utf8_length(spec.situation)
        if size > limits.SITUATION_MAX_BYTES:
            bad(
                "situation",
                f"is {size} bytes in UTF-8; the limit is {limits.SITUATION_MAX_BYTES} bytes",
            )
        elif len(spec.situation) > limits.SITUATION_MAX_CHARS:
            bad(
                "situation",
                f"is {len(spec.situation)} characters; the limit is {limits.SITUATION_MAX_CHARS}",
            )
        elif (words := word_count(spec.situation)) > limits.SITUATION_MAX_WORDS:
            bad("situation", f"has {words} words; the limit is {limits.SITUATION_MAX_WORDS} words")
    if "dynamic_info" in wanted and len(spec.dynamic_info) > limits.DYNAMIC_INFO_MAX_CHARS:
        bad(
            "dynamic_info",
            f"is {len(spec.dynamic_info)} characters; the limit is {limits.DYNAMIC_INFO_MAX_CHARS}",
        )
    if "scene" in wanted:
        if len(spec.scene) > limits.SCENE_MAX_ITEMS:
            bad("scene", f"has {len(spec.scene)} items; the limit is {limits.SCENE_MAX_ITEMS}")
        for i, item in enumerate(spec.scene[: limits.SCENE_MAX_ITEMS]):
            if not item.name.strip():
                bad(f"scene[{i}].name", "is required")
            elif len(item.name) > limits.SCENE_NAME_MAX_CHARS:
                bad(f"scene[{i}].name", f"the limit is {limits.SCENE_NAME_MAX_CHARS} characters")
            if len(item.description) > limits.SCENE_DESCRIPTION_MAX_CHARS:
                bad(
                    f"scene[{i}].description",
                    f"the limit is {limits.SCENE_DESCRIPTION_MAX_CHARS} characters",
                )
    # PostgreSQL cannot store U+0000 in text; proto3 strings may carry it. Refuse it here, naming
    # the field, rather than failing in the database.
    for name in (
        "agent_id",
        "user_id",
        "profile",
        "avatar_id",
        "speaker_id",
        "situation",
        "dynamic_info",
    ):
        if name in wanted and _NUL in getattr(spec, name):
            bad(name, _NUL_MESSAGE)
    if "scene" in wanted:
        for i, item in enumerate(spec.scene[: limits.SCENE_MAX_ITEMS]):
            if _NUL in item.name:
                bad(f"scene[{i}].name", _NUL_MESSAGE)
            if _NUL in item.description:
                bad(f"scene[{i}].description", _NUL_MESSAGE)
    if "metadata" in wanted:
        out.extend(metadata_violations(spec.metadata, prefix + "metadata"))
    if "max_duration" in wanted and spec.max_duration_ms is not None:
        if spec.max_duration_ms <= 0:
            bad("max_duration", "must be positive")
        elif spec.max_duration_ms > key_max_duration_ms:
            bad(
                "max_duration",
                f"is {spec.max_duration_ms / 1000:g}s; this API key allows at most "
                f"{key_max_duration_ms / 1000:g}s",
            )
    if "resume_window" in wanted and spec.resume_window_ms is not None:
        w = spec.resume_window_ms
        if not limits.RESUME_WINDOW_MIN_MS <= w <= limits.RESUME_WINDOW_MAX_MS:
            bad("resume_window", "must be between 1 second and 7 days")
    if (
        "continue_from_session_id" in wanted
        and spec.continue_from_session_id
        and not is_session_id(spec.continue_from_session_id)
    ):
        bad("continue_from_session_id", "must be 'sess_' followed by a 26-character ULID")
    return out


def metadata_violations(metadata: dict[str, str], field: str) -> list[FieldViolation]:
    if len(metadata) > limits.METADATA_MAX_PAIRS:
        # Too many pairs is the one thing to say: thousands of bad keys need no report each.
        return [
            FieldViolation(
                field, f"has {len(metadata)} pairs; the limit is {limits.METADATA_MAX_PAIRS}"
            )
        ]
    out: list[FieldViolation] = []
    for key, value in metadata.items():
        if not key:
            out.append(FieldViolation(field, "keys must not be empty"))
        elif len(key) > limits.METADATA_KEY_MAX_CHARS:
            out.append(
                FieldViolation(
                    f"{field}[{key[:16]}...]",
                    f"key is {len(key)} characters; the limit is {limits.METADATA_KEY_MAX_CHARS}",
                )
            )
        if _NUL in key:
            out.append(FieldViolation(field, f"keys {_NUL_MESSAGE}"))
        if _NUL in value:
            out.append(FieldViolation(f"{field}[{key[:64]}]", f"value {_NUL_MESSAGE}"))
        if len(value) > limits.METADATA_VALUE_MAX_CHARS:
            out.append(
                FieldViolation(
                    f"{field}[{key[:64]}]",
                    f"value is {len(value)} characters; the limit is "
                    f"{limits.METADATA_VALUE_MAX_CHARS}",
                )
            )
    return out


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)
