"""Streamed text -> whole sentences, so speech synthesis can start on the first sentence of a reply
while the rest is still being generated.

A sentence ends at `.`, `!`, `?`, `…` (or a run of them, with closing quotes/brackets after it)
followed by whitespace, at the CJK full stop, exclamation and question marks, and at a newline.
It does not end at:

- a decimal point or a dot inside a word ("3.5", "example.com"): no whitespace follows;
- a known abbreviation ("Mr.", "Dr.", "e.g.", "i.e.", "vs.") or an initial ("J. R. Smith");
- a dot or an ellipsis followed by a lowercase word ("Well... maybe", "etc. and more").

Because a dot's meaning depends on what follows, a sentence is released only once the first
non-space character after it has arrived (or at `flush()`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

_TERMINATORS = ".!?…"
_CJK_TERMINATORS = "\u3002\uff01\uff1f"
_CLOSERS = "\"')]}\u201d\u2019\u00bb\u300d\u300f"
# Words that take a dot and are (almost) never the end of a sentence. Compared lowercased,
# without the final dot.
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "rev",
        "gen",
        "capt",
        "lt",
        "sgt",
        "col",
        "gov",
        "mt",
        "ft",
        "vs",
        "cf",
        "approx",
        "fig",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "u.s",
    }
)


def _word_before(text: str, end: int) -> str:
    """The run of letters and dots that ends just before `end`."""
    start = end
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    return text[start:end]


def _is_abbreviation(text: str, dot: int) -> bool:
    word = _word_before(text, dot)
    if not word:
        return False
    if word.lower().strip(".") in _ABBREVIATIONS or word.lower() in _ABBREVIATIONS:
        return True
    # A single capital letter is an initial ("J. Smith"), except the pronoun "I".
    return len(word) == 1 and word.isupper() and word != "I"


class SentenceSplitter:
    """Accumulates text pieces (tokens, chunks) and hands back complete sentences.

    >>> s = SentenceSplitter()
    >>> s.feed("Hello there. It costs 3")
    ['Hello there.']
    >>> s.feed(".5 gold, e.g. cheap")
    []
    >>> s.flush()
    ['It costs 3.5 gold, e.g. cheap']
    """

    def __init__(self) -> None:
        self._buf = ""
        self._scan = 0  # everything before this offset is known to hold no boundary

    def push(self, piece: str) -> list[str]:
        """Same as `feed`."""
        return self.feed(piece)

    def feed(self, piece: str) -> list[str]:
        """Adds a piece of text; returns the sentences it completed, stripped, in order."""
        self._buf += piece
        out: list[str] = []
        while True:
            end = self._boundary()
            if end is None:
                return out
            sentence = self._buf[:end].strip()
            self._buf = self._buf[end:].lstrip()
            self._scan = 0
            if sentence:
                out.append(sentence)

    def flush(self) -> list[str]:
        """The unfinished tail (if it holds any text) as the last sentence; resets the splitter."""
        tail = self._buf.strip()
        self._buf = ""
        self._scan = 0
        return [tail] if tail else []

    @property
    def pending(self) -> str:
        """Text received but not yet part of a complete sentence."""
        return self._buf

    def _boundary(self) -> int | None:
        """The end offset of the first complete sentence in the buffer, if one is decided."""
        buf = self._buf
        n = len(buf)
        i = self._scan
        while i < n:
            c = buf[i]
            if c == "\n":
                return i + 1
            if c in _CJK_TERMINATORS:
                j = i + 1
                while j < n and (buf[j] in _CJK_TERMINATORS or buf[j] in _CLOSERS):
                    j += 1
                if j >= n:
                    self._scan = i
                    return None
                return j
            if c not in _TERMINATORS:
                i += 1
                continue
            j = i
            while j < n and buf[j] in _TERMINATORS:
                j += 1
            run = buf[i:j]
            while j < n and buf[j] in _CLOSERS:
                j += 1
            if j >= n:  # what follows decides: wait for it
                self._scan = i
                return None
            if not buf[j].isspace():  # "3.5", "a.b", "?!x": not an end
                i = j
                continue
            if "!" in run or "?" in run:
                return j
            # Only dots (or an ellipsis) from here on.
            if run == "." and _is_abbreviation(buf, i):
                i = j
                continue
            k = j
            while k < n and buf[k].isspace() and buf[k] != "\n":
                k += 1
            if k >= n:  # the next word decides: wait for it
                self._scan = i
                return None
            if buf[k].islower():  # "Well... maybe", "etc. and"
                i = k
                continue
            return j
        self._scan = n
        return None


def split_sentences(text: str) -> list[str]:
    """A whole text cut into sentences, with the same rules as `SentenceSplitter`."""
    splitter = SentenceSplitter()
    return splitter.feed(text) + splitter.flush()


async def sentences(pieces: AsyncIterable[str]) -> AsyncIterator[str]:
    """Re-chunks a stream of text pieces into a stream of sentences."""
    splitter = SentenceSplitter()
    async for piece in pieces:
        for sentence in splitter.feed(piece):
            yield sentence
    for sentence in splitter.flush():
        yield sentence
