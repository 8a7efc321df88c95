"""The disk under SQLite fills up, or turns read-only (issue 11). Needs root: it mounts.

- Full: a 4 MB tmpfs, a ballast file on it, and CreateSession with large situations until the
  disk is full. The create that does not fit is answered RESOURCE_EXHAUSTED naming the disk
  (never INTERNAL), logged once as a WARNING saying the disk is full; every session stored
  before is still there (GetSession, ListSessions), the server keeps SERVING. Once space is
  freed (the ballast removed), creates work again: no restart.
- Read-only: `mount -o remount,ro` is refused by the kernel while SQLite holds its files open for
  writing ("mount point is busy"), so a running server never sees an operator's remount. What it
  does see is the kernel turning the file system read-only under it after an error (ext4
  errors=remount-ro); the test does exactly that to a small ext4 image (its sysfs
  trigger_fs_error). CreateSession is then UNAVAILABLE (never INTERNAL), reads keep working, the
  server keeps SERVING. A process that opens the database while the file system is read-only (a
  restart) gets SQLite's own SQLITE_READONLY, also UNAVAILABLE, naming the read-only database.
  Such a file system comes back only through umount, fsck and mount: the server started again on
  the same file has every session, and creates work. That server runs with sqlite_synchronous
  FULL: with NORMAL (the default), commits not yet checkpointed live in the page cache, and a
  file system that dies under them loses them, as on a power cut.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parley.v1 import session_pb2
from parley.v1 import session_service_pb2 as pb

from parleyd.domain.errors import Unavailable
from parleyd.manager import wall_clock_ms
from parleyd.store import Repository, open_database
from tests.support.require import require
from tests.support.server import Running, serving
from tests.support.sessions import Client, create, get_session

CALL_TIMEOUT_S = 10.0
MAX_CREATES = 400  # 4 MB hold far fewer sessions with a situation this size
# About 30 KB of situation (under SITUATION_MAX_CHARS and SITUATION_MAX_WORDS).
SITUATION = " ".join(f"word{n:07d}" for n in range(2_400))
BALLAST_BYTES = 512 * 1024


def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        require("mounting a file system needs root (run the tests as root)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        require(f"{', '.join(missing)} not installed (apt-get install util-linux e2fsprogs)")


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def _check(*cmd: str) -> None:
    done = _run(*cmd)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr.strip()}"


@contextlib.contextmanager
def mounted(*mount_args: str, at: Path) -> Iterator[Path]:
    """`mount <mount_args> <at>` for the block; always unmounted afterwards."""
    at.mkdir(parents=True, exist_ok=True)
    _check("mount", *mount_args, str(at))
    try:
        yield at
    finally:
        if _run("umount", str(at)).returncode != 0:
            _run("umount", "-l", str(at))


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'parleyd.db'}"


async def create_or_error(c: Client, n: int) -> str | grpc.aio.AioRpcError:
    try:
        resp = await create(
            c,
            agent_mode=session_pb2.AGENT_MODE_EXTERNAL,
            user_id=f"player-{n}",
            situation=SITUATION,
            timeout=CALL_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as exc:
        return exc
    return str(resp.session.id)


async def all_session_ids(c: Client) -> set[str]:
    ids: set[str] = set()
    token = ""
    for _ in range(100):
        resp = await c.stub.ListSessions(
            pb.ListSessionsRequest(page_size=100, page_token=token),
            metadata=c.md(),
            timeout=CALL_TIMEOUT_S,
        )
        ids |= {s.id for s in resp.sessions}
        token = resp.next_page_token
        if not token:
            return ids
    raise AssertionError("ListSessions never ended")


async def health(r: Running) -> int:
    stub = health_pb2_grpc.HealthStub(r.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
    return int(reply.status)


async def assert_reads_work(r: Running, created: list[str]) -> None:
    for sid in created:
        assert (await get_session(r, sid, timeout=CALL_TIMEOUT_S)).id == sid
    assert await all_session_ids(r) == set(created)
    assert await health(r) == health_pb2.HealthCheckResponse.SERVING


# -- the disk fills up ---------------------------------------------------------------------------


async def test_full_disk_is_resource_exhausted_and_reads_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _need("mount", "umount")
    caplog.set_level(logging.INFO, logger="parleyd")
    with mounted("-t", "tmpfs", "-o", "size=4m", "tmpfs", at=tmp_path / "disk") as disk:
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * BALLAST_BYTES)
        async with serving(sqlite_url(disk)) as r:
            created: list[str] = []
            full: grpc.aio.AioRpcError | None = None
            for n in range(MAX_CREATES):
                outcome = await create_or_error(r, n)
                if isinstance(outcome, grpc.aio.AioRpcError):
                    full = outcome
                    break
                created.append(outcome)
            assert full is not None, f"{MAX_CREATES} sessions fit on a 4 MB disk"
            assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (full.code(), full.details())
            assert "disk is full" in (full.details() or "")
            assert created, "not even one session fit"
            print(f"{len(created)} sessions fit, then {full.code().name}: {full.details()}")
            # Again: the same answer, and the log says it once, not per call.
            again = await create_or_error(r, MAX_CREATES)
            assert isinstance(again, grpc.aio.AioRpcError)
            assert again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            said = [
                rec.getMessage()
                for rec in caplog.records
                if rec.levelno == logging.WARNING and "disk is full" in rec.getMessage()
            ]
            assert len(said) == 1, said
            assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]

            await assert_reads_work(r, created)

            # Space again: creates work without a restart.
            ballast.unlink()
            outcome = await create_or_error(r, MAX_CREATES + 1)
            assert isinstance(outcome, str), outcome
            assert (await get_session(r, outcome, timeout=CALL_TIMEOUT_S)).id == outcome


# -- the file system turns read-only -------------------------------------------------------------


async def test_read_only_file_system_is_unavailable_and_reads_go_on(tmp_path: Path) -> None:
    _need("mount", "umount", "mkfs.ext4", "e2fsck", "findmnt")
    image = tmp_path / "ext4.img"
    with image.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    _check("mkfs.ext4", "-q", "-F", str(image))
    at = tmp_path / "ext4"
    with mounted("-o", "loop,errors=remount-ro", str(image), at=at):
        device = _run("findmnt", "-no", "SOURCE", str(at)).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            require(f"this kernel has no {trigger} (ext4 sysfs error injection)")
        # The operator's remount: refused while the server has the database open for writing.
        async with serving(sqlite_url(at), sqlite_synchronous="FULL") as r:
            created = [await create_or_error(r, n) for n in range(3)]
            assert all(isinstance(sid, str) for sid in created), created
            ids = [str(sid) for sid in created]
            refused = _run("mount", "-o", "remount,ro", str(at))
            assert refused.returncode != 0, "remount,ro succeeded under an open SQLite database"

            trigger.write_text("parleyd test: turn read-only\n")
            options = _run("findmnt", "-no", "OPTIONS", str(at)).stdout
            assert "ro" in options.split(",") or "emergency_ro" in options, options

            for n in range(2):
                err = await create_or_error(r, 100 + n)
                assert isinstance(err, grpc.aio.AioRpcError), err
                assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
                assert "read-only" in (err.details() or "")
            await assert_reads_work(r, ids)

            # A process opening the database now (a restart) gets SQLITE_READONLY itself.
            db = await open_database(sqlite_url(at))
            try:
                with pytest.raises(Unavailable, match="the database is read-only"):
                    await Repository(db).create_api_key(
                        name="ro", max_session_duration_ms=60_000, now_ms=wall_clock_ms()
                    )
                assert await Repository(db).count_api_keys() >= 1
            finally:
                await db.close()
            key = r.api_key
    # Repaired (fsck) and mounted again: a new server on the same file has it all, and writes.
    fsck = _run("e2fsck", "-fy", str(image))
    assert fsck.returncode in (0, 1), f"e2fsck: {fsck.returncode} {fsck.stdout} {fsck.stderr}"
    with mounted("-o", "loop", str(image), at=at):
        async with serving(sqlite_url(at)) as r2:
            c = Client(r2.stub, key)
            for sid in ids:
                assert (await get_session(c, sid, timeout=CALL_TIMEOUT_S)).id == sid
            assert await all_session_ids(c) == set(ids)
            outcome = await create_or_error(c, 200)
            assert isinstance(outcome, str), outcome
