"""A brain that needs no network and no model: it answers from the persona's own brief.

`OfflineBrain` plays the persona with a tone picked from its profile (shopkeeper, interviewer,
tutor, support, guard, or a neutral default), whose phrases are package data read once at import
(data/offline_brain.toml, see `Phrasebook`). For a question it ranks the sentences of what the
persona knows — dynamic info first (the freshest), then the situation, the scene items and the
session summary — with Okapi BM25, and speaks the best one or two, turned into the first person
where that is safe ("You are Brom" -> "I am Brom"). When nothing in its brief is relevant it says
so plainly, naming what was asked about. It greets, makes small talk and reacts to game triggers.

Every choice is deterministic: the phrase used is picked by hashing the turn number and the
input, so replies vary along a conversation but the same conversation always gets the same ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import string
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, Final

from parleyd.engine.interfaces import Persona, Turn, UserInput
from parleyd.engine.sentences import split_sentences

# Picks one phrase of a bank, deterministically: (options, kind) -> phrase.
_Pick = Callable[[Sequence[str], str], str]


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --------------------------------------------------------------------------------------------
# Text normalisation

STOPWORDS = _wordset("""
    a about above after again against all am an and any anything are aren't as at be because
    been before being below between both but by can can't cannot could couldn't did didn't do
    does doesn't doing don't down during each else ever every few for from further get gets
    got had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
    herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
    just let let's like me might more most much must mustn't my myself no nor not now of off on
    once only or other ought our ours ourselves out over own please really same say shall shan't
    she she'd she'll she's should shouldn't so some something such tell than that that's the
    their theirs them themselves then there there's these they they'd they'll they're they've
    thing things think this those through to too under until up upon us very was wasn't we we'd
    we'll we're we've were weren't what what's whatever when when's where where's whether which
    while who who's whom whose why why's will with won't would wouldn't yes yeah you you'd
    you'll you're you've your yours yourself yourselves know explain describe mean okay ok
    also still even anyone someone one ones lot lots kind sort tell
    """)

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # letters and digits of any script
_NUMBER_TERM = "#num"
_VOWELS = set("aeiouy")


def stem(word: str) -> str:
    """A light suffix stemmer: plurals, -ing, -ed, a final -e and -y, so that "swords" ~ "sword",
    "refunds" ~ "refund", "priced" ~ "prices" ~ "price", "policies" ~ "policy"."""
    w = word
    if w.endswith("'s"):
        w = w[:-2]
    w = w.replace("'", "")
    if len(w) <= 3 or w.isdigit():
        return w
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "i"
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix, min_len in (("ing", 6), ("ed", 5)):
        if w.endswith(suffix) and len(w) >= min_len:
            base = w[: -len(suffix)]
            if len(base) >= 3 and any(ch in _VOWELS for ch in base):
                w = base
                if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz" + "aeiou":
                    w = w[:-1]  # "stopped" -> "stop", but "selling" -> "sell"
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w.endswith("y") and w[-2] not in _VOWELS:
        w = w[:-1] + "i"
    return w


def words(text: str) -> list[str]:
    """Lowercased words of `text` (apostrophes kept inside words), stopwords included."""
    return _WORD.findall(text.lower().replace("\u2019", "'").replace("\u2018", "'"))


def tokenize(text: str) -> list[str]:
    """The index terms of `text`: stemmed words without stopwords; numbers also count as #num."""
    terms: list[str] = []
    for w in words(text):
        if w in STOPWORDS:
            continue
        if any(ch.isdigit() for ch in w):
            terms.append(_NUMBER_TERM)
        s = stem(w)
        if s and s not in STOPWORDS:
            terms.append(s)
    return terms


# --------------------------------------------------------------------------------------------
# Okapi BM25


class Bm25:
    """Okapi BM25 over a fixed set of documents (each a list of terms).

    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))   (the always-positive variant)
    score(q, d) = sum over t in q of  w(t) * idf(t) * tf(t,d) * (k1 + 1)
                                      / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
    where w(t) is the query's weight for t (1 for ordinary terms).
    """

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.n_docs = len(docs)
        self._tfs = [Counter(d) for d in docs]
        self._lengths = [len(d) for d in docs]
        self.avgdl = (sum(self._lengths) / self.n_docs) if self.n_docs else 0.0
        df: Counter[str] = Counter()
        for tf in self._tfs:
            df.update(tf.keys())
        self._df = df

    def idf(self, term: str) -> float:
        n = self._df.get(term, 0)
        return math.log(1.0 + (self.n_docs - n + 0.5) / (n + 0.5))

    def rare_idf(self) -> float:
        """The idf of a term found in a single document: what an unseen term is worth."""
        return math.log(1.0 + (self.n_docs - 0.5) / 1.5) if self.n_docs else 0.0

    def score(self, query: Mapping[str, float], index: int) -> float:
        tf = self._tfs[index]
        if not self.avgdl:
            return 0.0
        norm = self.k1 * (1.0 - self.b + self.b * self._lengths[index] / self.avgdl)
        total = 0.0
        for term, weight in query.items():
            f = tf.get(term, 0)
            if f:
                total += weight * self.idf(term) * f * (self.k1 + 1.0) / (f + norm)
        return total

    def scores(self, query: Mapping[str, float]) -> list[float]:
        return [self.score(query, i) for i in range(self.n_docs)]

    def contains(self, index: int, term: str) -> bool:
        return term in self._tfs[index]


# --------------------------------------------------------------------------------------------
# Question understanding

# What a question asks for, recognised by cue words: answers holding these words are likelier
# (they join the query at a low weight), and the cue words themselves ("price", "open") are not
# the topic, so a question made only of them ("How much does it cost?", "When are you open?") is
# answered by any sentence of that kind.
_EXPANSION_WEIGHT = 0.35
_SYNONYM_WEIGHT = 0.8


@dataclass(frozen=True, slots=True)
class _Intent:
    cues: re.Pattern[str]
    cue_terms: frozenset[str]  # stems of the cue words
    terms: tuple[str, ...]  # stems an answer of this kind tends to hold


def _stems(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(stem(w) for w in text.split()))


_INTENTS = (
    _Intent(  # price
        re.compile(r"\b(?:how much|prices?|priced|costs?|pay|charges?|expensive|cheap|afford)\b"),
        frozenset(_stems("price cost pay charge expensive cheap afford")),
        (
            *_stems("cost price gold silver copper coin pay charge fee free dollar euro"),
            _NUMBER_TERM,
        ),
    ),
    _Intent(  # time
        re.compile(r"\b(?:when|what time|how long|hours|open|opens|close|closes)\b"),
        frozenset(_stems("open close hour time")),
        (
            *_stems(
                "open close hour day morning evening night noon week dawn dusk sunset sunrise "
                "monday tuesday wednesday thursday friday saturday sunday am pm"
            ),
            _NUMBER_TERM,
        ),
    ),
    _Intent(  # place
        re.compile(r"\b(?:where|location|located)\b"),
        frozenset(_stems("location located")),
        _stems(
            "near behind next north south east west left right street road room floor upstairs "
            "downstairs inside outside corner across"
        ),
    ),
    _Intent(  # quantity
        re.compile(r"\bhow (?:many|old|long|far)\b"),
        frozenset(),
        (_NUMBER_TERM,),
    ),
)
# Stems that stand for one another; a question's word is also matched by its synonyms.
_SYNONYMS: tuple[frozenset[str], ...] = tuple(
    frozenset(stem(w) for w in group.split())
    for group in (
        "refund reimbursement",
        "price cost charge fee",
        "buy purchase",
        "fix repair mend",
        "broken damaged faulty defective",
        "cancel terminate",
        "delivery shipping",
        "shop store",
        "job work",
        "help assist support",
        "money cash",
    )
)
# Phrases that mean one word: rewritten before the question is tokenized.
_PHRASES = ((re.compile(r"\bmoney back\b"), "refund"), (re.compile(r"\bsign in\b"), "login"))


@dataclass(frozen=True, slots=True)
class Query:
    weights: dict[str, float]  # term -> weight, for BM25
    said: frozenset[str]  # the topic terms the user said (cue words of an intent excluded)
    alternatives: dict[str, frozenset[str]]  # said term -> terms that count as matching it
    intent_terms: frozenset[str]  # terms that answer the kind of question asked


def query_terms(question: str) -> Query:
    """The weighted BM25 query for `question` and what an answer has to match."""
    low = question.lower()
    for pattern, replacement in _PHRASES:
        low = pattern.sub(replacement, low)
    primary = tokenize(low)
    weights: dict[str, float] = dict.fromkeys(primary, 1.0)
    cue_terms: set[str] = set()
    intent_terms: set[str] = set()
    for intent in _INTENTS:
        if intent.cues.search(low):
            cue_terms |= intent.cue_terms
            intent_terms.update(intent.terms)
    said = frozenset(t for t in primary if t != _NUMBER_TERM and t not in cue_terms)
    alternatives: dict[str, frozenset[str]] = {}
    for term in said:
        alts = {term}
        for group in _SYNONYMS:
            if term in group:
                alts |= group
        alternatives[term] = frozenset(alts)
        for alt in alts - {term}:
            weights.setdefault(alt, _SYNONYM_WEIGHT)
    for term in intent_terms:
        weights.setdefault(term, _EXPANSION_WEIGHT)
    return Query(weights, said, alternatives, frozenset(intent_terms))


_QUESTION_STARTS = _wordset(
    "what who where when why how which whose whom is are am do does did can could would will "
    "should may might have has shall tell explain describe any got"
)

# Not the topic of a question even though they are not stopwords.
_TOPIC_VERBS = _wordset(
    "sell sells buy buys have has get got make makes need want like know tell think give find "
    "see keep use do does did cost costs mean say explain describe recommend offer carry stock "
    "happen happens happened"
)
_DETERMINERS = _wordset(
    "the a an my your his her their our its this that these those any some which what"
)
_TOPIC_PREPOSITIONS = _wordset("about of on regarding concerning")


def is_question(text: str) -> bool:
    ws = words(text)
    return "?" in text or (bool(ws) and ws[0] in _QUESTION_STARTS)


def key_topic(question: str, known: Collection[str] = ()) -> str:
    """The noun phrase a question is about, in the user's words ("dragons", "quantum physics");
    "that" when none stands out. Heuristic: runs of content words, preferring one with a word
    the persona does not know (a stem not in `known`), then one after "about"/"of", then one
    after a determiner (or "there is"), then the first."""
    tokens = re.findall(r"[^\W_][\w'\u2019-]*", question)
    runs: list[tuple[int, int, list[str]]] = []  # (priority, -position, words)
    current: list[str] = []
    start_prev = ""
    for i, tok in enumerate([*tokens, ""]):
        low = tok.lower().replace("\u2019", "'")
        content = bool(tok) and low not in STOPWORDS and low not in _TOPIC_VERBS
        if content:
            if not current:
                start_prev = tokens[i - 1].lower() if i > 0 else ""
            current.append(re.sub(r"['\u2019]s$", "", tok))
            continue
        if current:
            if start_prev in _TOPIC_PREPOSITIONS:
                priority = 3
            elif start_prev in _DETERMINERS or start_prev == "there":
                priority = 2
            else:
                priority = 1
            if known and not any(t not in known for w in current for t in tokenize(w)):
                priority -= 3  # the persona knows every word of it: not what it lacks
            runs.append((priority, -len(runs), current))
            current = []
    if not runs:
        return "that"
    best = max(runs, key=lambda r: (r[0], r[1]))
    return " ".join(best[2])


# --------------------------------------------------------------------------------------------
# Turning the brief (written to the persona, "You are ...") into speech ("I am ...")

_SECOND_TO_FIRST: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b{pattern}\b", re.IGNORECASE), replacement)
    for pattern, replacement in (
        (r"are you", "am I"),
        (r"you are", "I am"),
        (r"you['\u2019]re", "I'm"),
        (r"you were", "I was"),
        (r"you have", "I have"),
        (r"you['\u2019]ve", "I've"),
        (r"you will", "I will"),
        (r"you['\u2019]ll", "I'll"),
        (r"you['\u2019]d", "I'd"),
        (r"yourself", "myself"),
        (r"yours", "mine"),
        (r"your", "my"),
    )
)
_SUBJECT_CONTEXT = _wordset(
    "and but or so then because when if while where that who which although though"
)
_YOU = re.compile(r"\byou\b", re.IGNORECASE)
# Instructions to the persona are not things it says.
_DIRECTIVE = re.compile(
    r"^(?:you (?:must|should|shall|never|always|may not|can ?not|can't|will never|do not|don't)"
    r"|do not|don't|never|always|be|stay|keep|speak|answer|respond|reply|talk|act|pretend"
    r"|refuse|avoid|remember|make sure|try to|greet|ask)\b",
    re.IGNORECASE,
)


def _match_case(replacement: str, original: str) -> str:
    if original[:1].isupper() and not replacement.startswith("I"):
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _replacer(replacement: str) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        return _match_case(replacement, m.group(0))

    return replace


def to_first_person(sentence: str) -> str:
    """ "You are Brom, the blacksmith; your forge is old." -> "I am Brom, the blacksmith; my forge
    is old." Only second-person forms change; a plain "you" becomes "I" where it starts a clause
    and "me" elsewhere."""
    out = sentence
    for pattern, replacement in _SECOND_TO_FIRST:
        out = pattern.sub(_replacer(replacement), out)

    def you(m: re.Match[str]) -> str:
        before = out[: m.start()].rstrip()
        prev = re.findall(r"[A-Za-z']+|[,;:.!?]", before)
        if (
            not prev
            or prev[-1] in {",", ";", ":", ".", "!", "?"}
            or prev[-1].lower() in (_SUBJECT_CONTEXT)
        ):
            return "I"
        return "me"

    return _YOU.sub(you, out)


def _sentence_case(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?…\"')”\u2019":
        text += "."
    return text


_NAME_PATTERNS = (
    re.compile(
        r"\b(?:you are|you're|i am|i'm|your name is|my name is)\s+([A-Z][\w'\u2019-]*)", re.I
    ),
    re.compile(r"\b(?:named|called)\s+([A-Z][\w'\u2019-]*)"),
)
_NOT_NAMES = _wordset("a an the not here there now in at on very so")


def persona_name(persona: Persona) -> str:
    """The persona's name: metadata "name", else "You are X" / "I am X" / "named X" in the
    situation, else the agent id."""
    explicit = persona.metadata.get("name", "").strip()
    if explicit:
        return explicit
    for pattern in _NAME_PATTERNS:
        for m in pattern.finditer(persona.situation):
            candidate = m.group(1).strip("'\u2019-")
            if candidate and candidate[0].isupper() and candidate.lower() not in _NOT_NAMES:
                return candidate
    return persona.agent_id


# --------------------------------------------------------------------------------------------
# Tones: the phrase banks are package data (data/offline_brain.toml), read and checked once at
# import, so a broken file fails the import rather than a conversation.


@dataclass(frozen=True, slots=True)
class Tone:
    """The lines a persona says around what it knows: one bank per occasion, picked from."""

    name: str
    role: str  # one sentence about what the persona does, "" when the situation says it
    greetings: tuple[str, ...]  # {name}
    hello: tuple[str, ...]  # a short greeting back before answering
    openers: tuple[str, ...]  # "" = no opener
    hedges: tuple[str, ...]
    unknown_followups: tuple[str, ...]
    clarify: tuple[str, ...]
    greet_back: tuple[str, ...]
    thanks: tuple[str, ...]
    goodbyes: tuple[str, ...]
    how_are_you: tuple[str, ...]
    acks: tuple[str, ...]
    statement_acks: tuple[str, ...]
    # Trigger kind or "generic" -> lines, formatted with {who}, {item} and {event}.
    reactions: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Phrasebook:
    """All of data/offline_brain.toml: the tones and the keywords that choose among them."""

    tones: Mapping[str, Tone]  # name -> tone; "default" is always there
    tone_keywords: tuple[tuple[str, tuple[str, ...]], ...]  # (tone, keywords), first match wins
    trigger_kinds: tuple[tuple[str, frozenset[str]], ...]  # (kind, trigger words), first wins


GENERIC_REACTION = "generic"  # the reaction to a trigger of no known kind
_BANKS = tuple(f.name for f in fields(Tone) if f.name not in {"name", "role", "reactions"})
_MAY_BE_EMPTY = frozenset({"openers", "hedges", "unknown_followups"})  # where "" is skipped
# The placeholders a bank's lines are formatted with; the other banks are spoken as written.
_PLACEHOLDERS = {"greetings": frozenset({"name"}), "reactions": frozenset({"who", "item", "event"})}


def parse_phrasebook(text: str) -> Phrasebook:
    """The phrasebook in a TOML text shaped like data/offline_brain.toml; ValueError naming the
    first key that is missing or malformed."""
    data = tomllib.loads(text)
    trigger_kinds = tuple(
        (_name(t, "kind", "trigger_kinds"), frozenset(_lines(t, "words", "trigger_kinds")))
        for t in _tables(data, "trigger_kinds")
    )
    kinds = {kind for kind, _ in trigger_kinds} | {GENERIC_REACTION}
    tones_data = data.get("tones")
    if not isinstance(tones_data, dict) or "default" not in tones_data:
        raise ValueError("offline brain data: [tones] must be a table holding tones.default")
    tones = {name: _tone(name, table, kinds) for name, table in tones_data.items()}
    tone_keywords = tuple(
        (_name(t, "tone", "tone_keywords", tones), _lines(t, "keywords", "tone_keywords"))
        for t in _tables(data, "tone_keywords")
    )
    return Phrasebook(tones, tone_keywords, trigger_kinds)


def _tone(name: str, table: object, kinds: set[str]) -> Tone:
    where = f"tones.{name}"
    if not isinstance(table, dict) or not isinstance(table.get("role"), str):
        raise ValueError(f"offline brain data: {where} must be a table with a role string")
    unknown = set(table) - {"role", "reactions", *_BANKS}
    reactions = table.get("reactions")
    if unknown or not isinstance(reactions, dict) or set(reactions) != kinds:
        raise ValueError(
            f"offline brain data: {where} must hold role, {', '.join(_BANKS)} and reactions "
            f"for {sorted(kinds)}, nothing else"
        )
    banks = {b: _lines(table, b, where, bank=b) for b in _BANKS}
    lines = {k: _lines(reactions, k, f"{where}.reactions", bank="reactions") for k in kinds}
    return Tone(name=name, role=table["role"], reactions=lines, **banks)


def _tables(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        raise ValueError(f"offline brain data: [[{key}]] must be a non-empty array of tables")
    return value


def _name(table: Mapping[str, Any], key: str, where: str, known: Collection[str] = ()) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value or (known and value not in known):
        raise ValueError(f"offline brain data: {where}.{key} {value!r} is not a known name")
    return value


def _lines(table: Mapping[str, Any], key: str, where: str, *, bank: str = "") -> tuple[str, ...]:
    """The non-empty list of strings at `table[key]`, with "" and placeholders only where the
    `bank` it fills allows them, and no stray brace (`str.format` would fail on it)."""
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise ValueError(f"offline brain data: {where}.{key} must be a non-empty list of strings")
    allowed = _PLACEHOLDERS.get(bank, frozenset())
    for line in value:
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(line) if f is not None}
        except ValueError:  # a stray brace
            used = {"{"}
        if (not line and bank not in _MAY_BE_EMPTY) or not used <= allowed:
            raise ValueError(f"offline brain data: {where}.{key}: bad line {line!r}")
    return tuple(value)


PHRASEBOOK: Final = parse_phrasebook(
    resources.files("parleyd.engine").joinpath("data", "offline_brain.toml").read_text("utf-8")
)


def tone_of(persona: Persona, book: Phrasebook = PHRASEBOOK) -> Tone:
    """The tone for the persona's profile, else guessed from the start of its situation."""
    for text in (persona.profile, " ".join(split_sentences(persona.situation)[:2])):
        low = f" {text.lower()} "
        if low.strip() in book.tones:
            return book.tones[low.strip()]
        for tone, keys in book.tone_keywords:
            if any(k in low for k in keys):
                return book.tones[tone]
    return book.tones["default"]


# --------------------------------------------------------------------------------------------
# What the persona knows


@dataclass(frozen=True, slots=True)
class Passage:
    """One sentence the persona could say, with where it came from."""

    text: str  # as spoken
    source: str  # "dynamic", "situation", "scene", "summary"
    terms: tuple[str, ...]
    boost: float = 1.0
    item_terms: tuple[str, ...] = ()  # a scene item's name, for the scene bonus


@dataclass(frozen=True, slots=True)
class Ranked:
    passage: Passage
    score: float  # what ranks passages
    coverage: float  # share of the question's information (idf mass) this passage matched


_SOURCE_BOOST = {"dynamic": 1.25, "situation": 1.0, "scene": 1.0, "summary": 0.8}
_SCENE_BONUS = 1.5
_MIN_COVERAGE = 0.2  # below: "I don't know about ..."
_SURE_COVERAGE = 0.45  # below (and above the minimum): a hedged answer
_FRESH_RATIO = 0.5  # dynamic info goes first when it scores at least this share of the best
_SECOND_RATIO = 0.6  # a second sentence is added when it scores at least this share of the first


_ABOUT_ME = re.compile(r"^(?:[^,.;:]{1,40},\s*)?(?:you|your)\b", re.IGNORECASE)
_SUMMARY_THEY = re.compile(r'^They (?:asked|said): "')
_SUMMARY_I = re.compile(r'^I (?:answered|said): "(.*)"$')


def _brief_passages(source: str, text: str) -> list[Passage]:
    out: list[Passage] = []
    for sentence in split_sentences(text):
        if _DIRECTIVE.match(sentence):
            continue
        # Only a sentence about the persona ("You sell ...", "At dawn, you ...") changes person:
        # elsewhere "you" may well mean the user ("Refunds are sent if you ask").
        about_me = _ABOUT_ME.match(sentence)
        spoken = _sentence_case(to_first_person(sentence) if about_me else sentence)
        terms = tuple(tokenize(sentence))
        if terms:
            out.append(Passage(spoken, source, terms, _SOURCE_BOOST[source]))
    return out


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def passages_of(persona: Persona) -> list[Passage]:
    """Everything the persona knows, as sentences: dynamic info first (the freshest), then the
    situation, the scene ("name: description") and the summary of earlier turns."""
    out = _brief_passages("dynamic", persona.dynamic_info)
    out += _brief_passages("situation", persona.situation)
    for item in persona.scene:
        name = item.name.strip()
        if not name:
            continue
        item_terms = tuple(tokenize(name))
        parts = split_sentences(item.description)
        if not parts:
            parts = [f"There is {_article(name)} {name} here."]
        else:
            label = f"The {name}" if name == name.lower() else name
            parts[0] = f"{label}? {_sentence_case(parts[0])}"
        for part in parts:
            terms = tuple(tokenize(f"{name}: {part}"))
            out.append(Passage(_sentence_case(part), "scene", terms, 1.0, item_terms))
    for sentence in split_sentences(persona.summary):
        # Our own summaries quote the exchanges: what the user said is not the persona's to say.
        if _SUMMARY_THEY.match(sentence):
            continue
        quoted = _SUMMARY_I.match(sentence)
        if quoted:
            sentence = quoted.group(1)
        terms = tuple(tokenize(sentence))
        if terms:
            boost = _SOURCE_BOOST["summary"]
            out.append(Passage(_sentence_case(sentence), "summary", terms, boost))
    return out


def rank(passages: Sequence[Passage], question: str) -> list[Ranked]:
    """The passages that match `question` at all, best first (BM25 x source boost + scene bonus;
    ties go to the earlier passage, i.e. to dynamic info).

    Each also gets its coverage: the share of the question's information (the idf of the topic
    words the user said, an unseen word counting as a rare one) that the passage matches, a
    synonym standing for its word. A question made only of cue words ("How much is it?") is
    covered by any passage holding an answer of that kind (a price)."""
    if not passages:
        return []
    index = Bm25([p.terms for p in passages])
    query = query_terms(question)
    unseen = index.rare_idf()

    def info(term: str) -> float:
        return min(index.idf(term), unseen)

    total_info = sum(info(t) for t in query.said) or 1.0
    ranked: list[tuple[float, int, Ranked]] = []
    for i, passage in enumerate(passages):
        base = index.score(query.weights, i)
        if base <= 0.0:
            continue
        score = base * passage.boost
        if passage.item_terms and all(t in query.said for t in passage.item_terms):
            score += _SCENE_BONUS  # the question names this scene item
        if query.said:
            matched = sum(
                info(t)
                for t in query.said
                if any(index.contains(i, alt) for alt in query.alternatives[t])
            )
            coverage = matched / total_info
        else:
            coverage = 1.0 if any(index.contains(i, t) for t in query.intent_terms) else 0.0
        ranked.append((-score, i, Ranked(passage, score, coverage)))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in ranked]


# --------------------------------------------------------------------------------------------
# Small talk

_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|hiya|heya|howdy|greetings|hail|yo|well met|good (?:morning|afternoon|"
    r"evening|day))\b(?:\s+there\b)?[\s,!.]*",
    re.IGNORECASE,
)
_WHO = re.compile(
    r"\b(?:who are you|who're you|what(?:'s| is) your name|your name\b|introduce yourself|"
    r"tell me about yourself|who am i (?:talking|speaking) (?:to|with)|what are you)\b"
)
_JOB = re.compile(
    r"\b(?:what do you do|what(?:'s| is) your (?:job|work|trade|role)|what do you do here|"
    r"what(?:'s| is) this place|where am i)\b"
)
_HOW = re.compile(
    r"\b(?:how are you|how're you|how(?:'s| is) it going|how are things|how do you do|"
    r"how have you been|how(?:'s| is) (?:your day|business))\b"
)
_THANKS = re.compile(r"\b(?:thanks|thank you|thank u|thx|cheers|much appreciated|appreciate it)\b")
_BYE = re.compile(
    r"\b(?:bye|goodbye|good bye|bye bye|farewell|see you|see ya|good night|take care|so long)\b"
    r"|^(?:ok(?:ay)?[, ]+)?later\b"
)
_ACK = re.compile(
    r"^(?:ok|okay|alright|all right|sure|fine|got it|i see|yes|yeah|yep|no|nope|hmm+|hm+|"
    r"right|great|cool|nice|good|understood)[.!]*$"
)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("\u2019", "'")).strip()


def _trigger_words(trigger: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", trigger)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


_WHO_KEYS = ("name", "player_name", "player", "who", "user", "username", "character")
_ITEM_KEYS = ("item", "item_name", "gift", "object", "thing")


def _payload_text(payload: Mapping[str, Any], keys: Iterable[str]) -> str:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = re.sub(r"\s+", " ", str(value)).strip()
            if text:
                return text[:40]
        if isinstance(value, Mapping):
            nested = _payload_text(value, ("name", "title"))
            if nested:
                return nested
    return ""


# --------------------------------------------------------------------------------------------
# The brain


class OfflineBrain:
    """Deterministic, network-free `Brain` that speaks from the persona's brief."""

    def __init__(self, phrasebook: Phrasebook = PHRASEBOOK) -> None:
        """`phrasebook`: the tones it speaks in (by default those of data/offline_brain.toml)."""
        self._book = phrasebook

    async def reply(
        self, persona: Persona, history: Sequence[Turn], said: UserInput
    ) -> AsyncIterator[str]:
        """Yields the reply one whole sentence at a time; the pieces concatenate to the reply
        text (every sentence after the first starts with a space)."""
        for i, sentence in enumerate(self.compose(persona, history, said)):
            await asyncio.sleep(0)
            yield sentence if i == 0 else " " + sentence

    def compose(self, persona: Persona, history: Sequence[Turn], said: UserInput) -> list[str]:
        """The reply as a list of sentences."""
        tone = tone_of(persona, self._book)
        seed = f"{len(history)}|{persona.agent_id}|{said.text}|{said.trigger}|{said.opening}"

        def pick(options: Sequence[str], kind: str) -> str:
            digest = hashlib.sha256(f"{seed}|{kind}".encode()).digest()
            return options[int.from_bytes(digest[:8], "big") % len(options)]

        if said.opening:
            parts = self._greeting(persona, tone, pick)
        elif said.trigger:
            parts = [self._reaction(tone, said, pick)]
        else:
            parts = self._answer(persona, tone, said.text, pick)
        return [s for part in parts for s in split_sentences(part)]

    # -- pieces ---------------------------------------------------------------------------

    def _greeting(self, persona: Persona, tone: Tone, pick: _Pick) -> list[str]:
        custom = persona.metadata.get("greeting", "").strip()
        if custom:
            return split_sentences(custom)
        return split_sentences(pick(tone.greetings, "greeting").format(name=persona_name(persona)))

    def _reaction(self, tone: Tone, said: UserInput, pick: _Pick) -> str:
        trigger_words = _trigger_words(said.trigger)
        kind = next(
            (k for k, keys in self._book.trigger_kinds if any(w in keys for w in trigger_words)),
            GENERIC_REACTION,
        )
        who = _payload_text(said.payload, _WHO_KEYS)
        item = _payload_text(said.payload, _ITEM_KEYS)
        line = pick(tone.reactions[kind], kind).format(
            who=f", {who}" if who else "",
            item=f"the {item}" if item else "this",
            event=" ".join(trigger_words) or "something happened",
        )
        return line[:1].upper() + line[1:]  # a line may start with the event's lowercase words

    def _identity(self, persona: Persona, tone: Tone, *, more: bool = False) -> list[str]:
        """Who the persona is: its "You are ..." sentence, else its name and role. With `more`,
        also the sentence of the situation that follows (what it does)."""
        name = persona_name(persona)
        sentences = [s for s in split_sentences(persona.situation) if not _DIRECTIVE.match(s)]
        for i, sentence in enumerate(sentences):
            if (
                name
                and name in sentence
                and re.search(r"\b(?:you are|you're|i am|i'm|your name|my name)\b", sentence, re.I)
            ):
                out = [_sentence_case(to_first_person(sentence))]
                if more and i + 1 < len(sentences):
                    out.append(_sentence_case(to_first_person(sentences[i + 1])))
                return out
        out = [f"I'm {name}."]
        if tone.role:
            out.append(tone.role)
        return out

    def _answer(self, persona: Persona, tone: Tone, text: str, pick: _Pick) -> list[str]:
        text = text.strip()
        if not words(text):
            return [pick(tone.clarify, "clarify")]
        prefix: list[str] = []
        greeting = _GREETING.match(text)
        if greeting:
            rest = text[greeting.end() :].strip()
            name = persona_name(persona)
            if name:
                rest = re.sub(rf"^{re.escape(name)}\b[\s,!.]*", "", rest, flags=re.I).strip()
            if not words(rest):
                return split_sentences(pick(tone.greet_back, "greet_back"))
            prefix = [pick(tone.hello, "hello")]
            text = rest
        low = _norm(text)
        if _WHO.search(low):
            return prefix + self._identity(persona, tone)
        if _JOB.search(low):
            return prefix + self._identity(persona, tone, more=True)
        if _HOW.search(low):
            return split_sentences(pick(tone.how_are_you, "how"))
        thanks = bool(_THANKS.search(low))
        bye = bool(_BYE.search(low))
        leftover = _THANKS.sub(" ", _BYE.sub(" ", low))
        if (thanks or bye) and not tokenize(leftover):
            out = []
            if thanks:
                out += split_sentences(pick(tone.thanks, "thanks"))
            if bye:
                out += split_sentences(pick(tone.goodbyes, "bye"))
            return out
        if _ACK.match(low):
            return [*prefix, pick(tone.acks, "ack")]
        return prefix + self._from_brief(persona, tone, text, pick, opener=not prefix)

    def _from_brief(
        self, persona: Persona, tone: Tone, question: str, pick: _Pick, *, opener: bool = True
    ) -> list[str]:
        ranked = rank(passages_of(persona), question)
        query = query_terms(question)
        said = query.said
        ranked = [r for r in ranked if r.coverage > 0.0]  # matching the topic, not just cues
        # Dynamic info is searched first: the freshest word on a topic is what gets said, when it
        # is about as relevant as the best of the rest.
        fresh = next((r for r in ranked if r.passage.source == "dynamic"), None)
        if fresh is not None and ranked and fresh is not ranked[0]:
            top = ranked[0]
            if fresh.coverage >= top.coverage and fresh.score >= _FRESH_RATIO * top.score:
                ranked = [fresh, *(r for r in ranked if r is not fresh)]
        best = ranked[0] if ranked else None
        if best is None or best.coverage < _MIN_COVERAGE:
            if not said and not query.intent_terms:
                return [pick(tone.clarify, "clarify")]
            if not is_question(question):
                return split_sentences(pick(tone.statement_acks, "statement"))
            known = {t for p in passages_of(persona) for t in p.terms}
            known.update(t for intent in _INTENTS for t in intent.cue_terms)
            out = [f"I'm afraid I don't know about {key_topic(question, known)}."]
            follow = pick(tone.unknown_followups, "unknown")
            return out + ([follow] if follow else [])
        chosen = [best]
        for other in ranked[1:3]:
            if (
                other.score >= _SECOND_RATIO * best.score
                and other.coverage >= _MIN_COVERAGE
                and other.passage.text != best.passage.text
                and len(best.passage.text) + len(other.passage.text) <= 320
            ):
                chosen.append(other)
                break
        if said and best.coverage < _SURE_COVERAGE:
            lead = pick(tone.hedges, "hedge")
        else:
            lead = pick(tone.openers, "opener") if opener else ""
        out = [lead] if lead else []
        out += [r.passage.text for r in chosen]
        return out

    # -- summary ----------------------------------------------------------------------------

    async def summarize(self, persona: Persona, history: Sequence[Turn]) -> str:
        """Extractive: the most informative exchanges (a user turn and the sentence of the reply
        that best answers it), ranked by BM25 against the whole conversation, in the order they
        happened, within ~400 characters."""
        return summarize_extractive(persona, history)


SUMMARY_LIMIT = 400
_UNKNOWN = re.compile(r"\b(?:don't|do not) know\b", re.I)


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip(" ,;:") + "…"


def summarize_extractive(persona: Persona, history: Sequence[Turn]) -> str:
    """See `OfflineBrain.summarize`. Small talk (greetings, thanks, goodbyes) is left out; the
    previous summary's first sentence leads, so older turns are not forgotten at once."""
    exchanges: list[tuple[str, list[str]]] = []  # (user turn, reply sentences)
    for turn in history:
        text = turn.text.strip()
        if turn.role == "user" and text:
            exchanges.append((text, []))
        elif turn.role == "agent" and exchanges and text:
            exchanges[-1][1].extend(split_sentences(text))
    previous = [s for s in split_sentences(persona.summary) if s.strip()]
    head = _clip(previous[0], 160) if previous else ""
    small_talk = re.compile(f"{_GREETING.pattern}|{_THANKS.pattern}|{_BYE.pattern}", re.I)
    docs: list[list[str]] = []
    kept: list[int] = []
    for i, (question, answer) in enumerate(exchanges):
        if not tokenize(small_talk.sub(" ", _norm(question))):
            continue
        if answer and _UNKNOWN.search(answer[0]):  # nothing learnt
            continue
        docs.append(tokenize(question + " " + " ".join(answer)))
        kept.append(i)
    if not kept:
        return head
    index = Bm25(docs)
    # The conversation as the query: a term weighs as many exchanges as it appears in, so the
    # exchanges about what the conversation kept coming back to rank first.
    spread: Counter[str] = Counter(t for d in docs for t in set(d))
    order = sorted(range(len(kept)), key=lambda k: (-index.score(spread, k), k))
    parts: dict[int, str] = {}
    budget = SUMMARY_LIMIT - (len(head) + 1 if head else 0)
    for k in order:
        question, answer = exchanges[kept[k]]
        asked = is_question(question)
        q = _clip(split_sentences(question)[0], 120)
        q = _sentence_case(q + "?" if asked and q[-1:].isalnum() else q)
        verb = "asked" if asked else "said"
        part = f'They {verb}: "{q}"'
        if answer:
            wanted = dict.fromkeys(tokenize(question), 1.0)
            by_terms = Bm25([tokenize(s) for s in answer], b=0.0).scores(wanted)
            # Not a question back, nor an opener ("Let me see."), when there is anything else.
            useful = [
                j for j, s in enumerate(answer) if not s.endswith("?") and len(words(s)) >= 3
            ] or list(range(len(answer)))
            best = max(useful, key=lambda j: (by_terms[j], len(answer[j])))
            part += f' I answered: "{_sentence_case(_clip(answer[best], 120))}"'
        if len(part) + 1 > budget:
            continue
        parts[kept[k]] = part
        budget -= len(part) + 1
    body = " ".join(parts[i] for i in sorted(parts))
    return _clip(f"{head} {body}" if head else body, SUMMARY_LIMIT)
