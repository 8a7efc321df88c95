"""Cost of the drawn avatar's frames: drawing and JPEG-encoding each, reading the cache, size.

    .venv/bin/python bench/avatar.py [--ids shopkeeper-1,tutor,...] [--reads 10] [--json]

A face has 15 visemes x 2 eye states = 30 distinct frames (parleyd.engine.avatar). For each avatar
id a fresh `DrawnAvatar` draws all 30 once (draw + 2x supersample reduction + JPEG encode: what a
VIDEO session's first seconds cost), then every frame is read again from its cache `--reads`
times (what each later frame costs). Also the JPEG sizes, and the bytes per second a 15 fps
stream of such frames takes. Runs in this process, one thread. Figures only, nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, percentile

from parleyd.engine.avatar import DrawnAvatar
from parleyd.engine.visemes import VISEMES

IDS = ("shopkeeper-1", "tutor", "agent_42", "npc-guard", "alice", "bob", "brom", "timing")


def measure(avatar_id: str, reads: int) -> dict[str, Any]:
    avatar = DrawnAvatar(avatar_id)
    keys = [(v, closed) for v in VISEMES for closed in (False, True)]
    drawn_ms: list[float] = []
    sizes: list[int] = []
    for viseme, closed in keys:
        t0 = time.perf_counter()
        frame = avatar.frame(viseme, eyes_closed=closed)
        drawn_ms.append((time.perf_counter() - t0) * 1000)
        sizes.append(len(frame))
    t0 = time.perf_counter()
    for _ in range(reads):
        for viseme, closed in keys:
            avatar.frame(viseme, eyes_closed=closed)
    cached_us = (time.perf_counter() - t0) / (reads * len(keys)) * 1e6
    return {
        "avatar_id": avatar_id,
        "frames": len(keys),
        "size": [avatar.width, avatar.height],
        "fps": avatar.fps,
        "draw_ms_mean": round(statistics.fmean(drawn_ms), 2),
        "draw_ms_p95": round(percentile(drawn_ms, 95), 2),
        "draw_ms_total": round(sum(drawn_ms), 1),
        "cached_read_us": round(cached_us, 2),
        "jpeg_bytes_min": min(sizes),
        "jpeg_bytes_mean": round(statistics.fmean(sizes)),
        "jpeg_bytes_max": max(sizes),
        "stream_kbit_s": round(statistics.fmean(sizes) * avatar.fps * 8 / 1000, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", default=",".join(IDS), help="avatar ids, comma-separated")
    ap.add_argument("--reads", type=int, default=10, help="cached reads of every frame [10]")
    ap.add_argument("--json", action="store_true", help="print one JSON document only")
    args = ap.parse_args(argv)
    ids = [i for i in args.ids.split(",") if i]
    DrawnAvatar("warm-up").frame("sil", eyes_closed=False)  # imports, fonts, encoder set-up
    results = [measure(i, args.reads) for i in ids]
    doc = {
        "benchmark": "avatar",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "reads": args.reads,
        "draw_ms_mean": round(statistics.fmean(r["draw_ms_mean"] for r in results), 2),
        "cached_read_us": round(statistics.fmean(r["cached_read_us"] for r in results), 2),
        "jpeg_bytes_mean": round(statistics.fmean(r["jpeg_bytes_mean"] for r in results)),
        "results": results,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"parleyd drawn avatar — {doc['date']} — {doc['machine']['cpus']} cores")
    print(
        f"{'avatar':<14} {'draw ms':>8} {'p95':>6} {'all 30':>8} {'cached us':>10} "
        f"{'JPEG bytes (min-max)':>22} {'kbit/s':>7}"
    )
    for r in results:
        sizes = f"{r['jpeg_bytes_mean']} ({r['jpeg_bytes_min']}-{r['jpeg_bytes_max']})"
        print(
            f"{r['avatar_id']:<14} {r['draw_ms_mean']:>8.2f} {r['draw_ms_p95']:>6.2f} "
            f"{r['draw_ms_total']:>8.1f} {r['cached_read_us']:>10.2f} {sizes:>22} "
            f"{r['stream_kbit_s']:>7.1f}"
        )
    print(
        f"  mean: draw + encode {doc['draw_ms_mean']} ms/frame (once per frame and avatar), "
        f"cached read {doc['cached_read_us']} us, {doc['jpeg_bytes_mean']} B per JPEG "
        f"({results[0]['size'][0]}x{results[0]['size'][1]} at {results[0]['fps']} fps)"
    )


if __name__ == "__main__":
    main()
