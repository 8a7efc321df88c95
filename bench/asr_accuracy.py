"""Speech recognition accuracy: the session-biased language model against the stock one.

A fixed set of questions a visitor asks a village blacksmith is spoken by espeak-ng in two voices
and recognized by `PocketSphinxRecognizer`, once with `set_context(SITUATION)` and once with no
context (the wheel's generic en-us model). Audio is fed in 20 ms chunks, as the engine would.
For each model and voice a fresh recognizer hears the questions in the same order.

Reports word accuracy (1 - WER, WER = word edit distance / reference words, over the whole set),
sentences recognized exactly, and the real-time factor (CPU-side seconds spent in feed() and
finish() / seconds of audio). Also the time set_context() takes for the situation and for one of
about 2,500 words. Prints a table, or JSON with --json. Asserts nothing.

    .venv/bin/python bench/asr_accuracy.py [--json] [--voices en-us,en-gb-x-rp]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from parleyd.engine.asr import PocketSphinxRecognizer, normalize  # noqa: E402
from tests.engine.speech import say, silence  # noqa: E402

SITUATION = (
    "You are Bram, the blacksmith of Oakvale, a small village in the hills. "
    "You forge and sell swords, axes, shields, helmets, nails and horseshoes, and you repair "
    "armour. A long sword costs forty gold coins, a short sword twenty five, an axe fifteen and "
    "a round shield thirty. Repairs cost five silver coins. "
    "Your refund policy: a full refund within seven days if the blade is not damaged. "
    "The forge opens at dawn and closes at sunset. Your daughter Ada helps at the anvil. "
    "The mayor lives in the big house by the well. Travellers sleep at the Rusty Anchor inn. "
    "Iron ore comes from the mine north of the village; the road there is dangerous since the "
    "wolves came back."
)
PROFILE = "Bram is gruff but honest, proud of his steel, and he hates haggling."

QUESTIONS = (
    "hello who are you",
    "what is the refund policy",
    "how much is the long sword",
    "do you sell shields",
    "how much does an axe cost",
    "can you repair my armour",
    "where does the mayor live",
    "when does the forge open",
    "where can i sleep tonight",
    "is the road to the mine dangerous",
    "where does the iron ore come from",
    "can i get a refund",
    "who is your daughter",
    "i would like to buy a helmet",
    "do you have any horseshoes",
    "that is too expensive",
    "can you give me a discount",
    "what is the name of this village",
    "thank you very much",
    "goodbye",
)

CHUNK_MS = 20


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Word-level edit distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@dataclass
class Run:
    model: str
    voice: str
    ref_words: int = 0
    errors: int = 0
    exact: int = 0
    audio_s: float = 0.0
    cpu_s: float = 0.0
    partials: int = 0
    transcripts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return 1.0 - self.errors / self.ref_words if self.ref_words else 0.0

    @property
    def rtf(self) -> float:
        return self.cpu_s / self.audio_s if self.audio_s else 0.0


def run(model: str, voice: str) -> Run:
    rec = PocketSphinxRecognizer()
    rec.set_context([SITUATION, PROFILE] if model == "session" else [])
    out = Run(model=model, voice=voice)
    step = 2 * 16_000 * CHUNK_MS // 1000
    for question in QUESTIONS:
        pcm = silence(200) + say(question, voice=voice) + silence(200)
        t0 = time.perf_counter()
        rec.start()
        for i in range(0, len(pcm), step):
            if rec.feed(pcm[i : i + step]) is not None:
                out.partials += 1
        text = rec.finish()
        out.cpu_s += time.perf_counter() - t0
        out.audio_s += len(pcm) / (2 * 16_000)
        ref = [w for s in normalize(question) for w in s]
        hyp = text.split()
        errors = word_errors(ref, hyp)
        out.ref_words += len(ref)
        out.errors += errors
        out.exact += errors == 0
        out.transcripts.append((question, text))
    return out


def context_build_ms() -> dict[str, float]:
    """set_context() time for the situation, and for ~2,500 words of varied text."""
    rec = PocketSphinxRecognizer()
    rec.set_context(["warm up"])
    t0 = time.perf_counter()
    rec.set_context([SITUATION, PROFILE])
    small = (time.perf_counter() - t0) * 1000
    big_text = " ".join(
        [SITUATION, PROFILE]
        + [f"Item {i}: the {w} number {i} costs {i * 3} gold." for i, w in enumerate(_WORDS * 10)]
    )
    t0 = time.perf_counter()
    rec.set_context([big_text])
    big = (time.perf_counter() - t0) * 1000
    return {
        "situation_words": float(len(SITUATION.split()) + len(PROFILE.split())),
        "situation_ms": round(small, 1),
        "big_words": float(len(big_text.split())),
        "big_ms": round(big, 1),
        "big_vocabulary": float(len(rec.vocabulary)),
    }


_WORDS = (
    *("lantern", "rope", "barrel", "saddle", "bridle", "hammer", "tongs", "chisel", "bellows"),
    *("anvil", "crate", "ladder", "bucket", "blanket", "candle", "kettle", "cloak", "boots"),
    *("gloves", "satchel", "quiver", "arrow", "bow", "spear", "dagger", "mace"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--voices", default="en-us,en-gb-x-rp", help="espeak-ng voices, comma-separated"
    )
    ap.add_argument("--transcripts", action="store_true", help="print every transcript")
    args = ap.parse_args()
    voices = [v for v in args.voices.split(",") if v]

    runs = [run(model, voice) for voice in voices for model in ("session", "generic")]
    build = context_build_ms()
    totals: dict[str, dict[str, Any]] = {}
    for model in ("session", "generic"):
        mine = [r for r in runs if r.model == model]
        ref = sum(r.ref_words for r in mine)
        totals[model] = {
            "accuracy": round(1 - sum(r.errors for r in mine) / ref, 3),
            "exact": sum(r.exact for r in mine),
            "sentences": len(mine) * len(QUESTIONS),
            "rtf": round(sum(r.cpu_s for r in mine) / sum(r.audio_s for r in mine), 3),
        }
    if args.json:
        print(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "questions": len(QUESTIONS),
                    "runs": [
                        {**asdict(r), "accuracy": round(r.accuracy, 3), "rtf": round(r.rtf, 3)}
                        for r in runs
                    ],
                    "totals": totals,
                    "set_context": build,
                },
                indent=2,
            )
        )
        return

    print(f"{len(QUESTIONS)} questions, chunks of {CHUNK_MS} ms, {platform.platform()}")
    print(f"{'model':<8} {'voice':<12} {'word acc':>8} {'exact':>7} {'RTF':>6} {'partials':>8}")
    for r in runs:
        print(
            f"{r.model:<8} {r.voice:<12} {r.accuracy:>8.3f} {r.exact:>3}/{len(QUESTIONS):<3} "
            f"{r.rtf:>6.3f} {r.partials:>8}"
        )
    for model, t in totals.items():
        print(
            f"{model:<8} {'all':<12} {t['accuracy']:>8.3f} {t['exact']:>3}/{t['sentences']:<3} "
            f"{t['rtf']:>6.3f}"
        )
    print(
        f"set_context: {build['situation_ms']:.1f} ms for the situation "
        f"({build['situation_words']:.0f} words), {build['big_ms']:.1f} ms for "
        f"{build['big_words']:.0f} words ({build['big_vocabulary']:.0f}-word vocabulary)"
    )
    if args.transcripts:
        for r in runs:
            print(f"\n[{r.model} / {r.voice}]")
            for question, text in r.transcripts:
                mark = " " if question == text else "*"
                print(f" {mark} {question!r:<40} -> {text!r}")


if __name__ == "__main__":
    main()
