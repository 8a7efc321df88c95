"""`parleyd talk`, as the README shows it: a real `parleyd serve` with the built-in engine, and
the command asking two questions in a row — each one answered, in order, and the voice saved."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

from tests.support.process import running_parleyd
from tests.support.tools import tool


def test_talk_asks_questions_one_turn_at_a_time(tmp_path: Path) -> None:
    exe = tool("parleyd")
    assert exe is not None, "the parleyd command is not installed (run `make setup`)"
    with running_parleyd(tmp_path / "server") as server:
        out = tmp_path / "reply.wav"
        done = subprocess.run(
            [
                exe,
                "talk",
                "--target",
                server.target,
                "--api-key",
                server.dev_api_key,
                "--text",
                "How much is a sword?",
                "--text",
                "Where is your forge?",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    answers = [line for line in done.stdout.splitlines() if line.startswith("brom: ")]
    assert len(answers) == 2, done.stdout
    assert "forty" in answers[0].lower() or "40" in answers[0], answers
    assert "well" in answers[1].lower() or "forge" in answers[1].lower(), answers
    with wave.open(str(out), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        assert w.getnframes() / w.getframerate() > 1.0  # two spoken answers
