"""Command line: `parleyd serve` and the admin commands (`parleyd keys ...`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from parleyd import __version__, logs
from parleyd.app import App
from parleyd.config import Settings, add_arguments, load_settings
from parleyd.domain.durations import parse_duration_ms
from parleyd.domain.errors import ParleyError
from parleyd.domain.session import ConnectionType, SessionSpec
from parleyd.manager import SessionManager
from parleyd.store import Repository, open_database

log = logging.getLogger("parleyd")

DEV_KEY_NAME = "development"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="parleyd", description="Live AI conversation sessions.")
    parser.add_argument("--version", action="version", version=f"parleyd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    add_arguments(serve)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key and print it once")
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'game-backend'")
    create.add_argument(
        "--max-session-duration",
        default="1h",
        help="longest max_duration a session of this key may have (e.g. 30m, 2h) [1h]",
    )
    create.add_argument("--database-url", default=None, help="[PARLEYD_DATABASE_URL]")
    lst = keys_sub.add_parser("list", help="list API keys (never their secrets)")
    lst.add_argument("--database-url", default=None, help="[PARLEYD_DATABASE_URL]")
    revoke = keys_sub.add_parser("revoke", help="revoke an API key by id")
    revoke.add_argument("key_id")
    revoke.add_argument("--database-url", default=None, help="[PARLEYD_DATABASE_URL]")

    sessions = sub.add_parser(
        "sessions", help="operator reads of any session (a revoked key's included)"
    )
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    history = sessions_sub.add_parser(
        "history", help="print a session and its conversation, one message per line"
    )
    history.add_argument("session_id")
    history.add_argument("--database-url", default=None, help="[PARLEYD_DATABASE_URL]")

    talk = sub.add_parser("talk", help="talk to a character on a running server")
    talk.add_argument("--target", default="127.0.0.1:50051", help="host:port of parleyd")
    talk.add_argument(
        "--api-key", default=os.environ.get("PARLEYD_API_KEY", ""), help="[PARLEYD_API_KEY]"
    )
    talk.add_argument("--text", action="append", default=[], help="something to say (repeatable)")
    talk.add_argument("--wav", type=Path, help="a WAV file of your question (any rate)")
    talk.add_argument("--out", type=Path, help="save the character's voice to this WAV file")
    talk.add_argument("--agent-id", default="brom")
    talk.add_argument("--profile", default="shopkeeper")
    talk.add_argument(
        "--situation",
        default=(
            "You are Brom, the blacksmith of Oakvale. You sell swords for 40 gold and shields "
            "for 25 gold. Your forge is next to the well. The mayor is Elsa."
        ),
    )

    args = parser.parse_args(argv)
    if args.command == "talk":
        from parleyd.talk import talk as run_talk

        if not args.api_key or not (args.text or args.wav):
            parser.error("talk needs --api-key (or PARLEYD_API_KEY) and --text or --wav")
        sys.exit(
            asyncio.run(
                run_talk(
                    args.target,
                    args.api_key,
                    texts=args.text,
                    wav=args.wav,
                    out=args.out,
                    agent_id=args.agent_id,
                    profile=args.profile,
                    situation=args.situation,
                )
            )
        )
    if args.command == "serve":
        settings = load_settings(args)
        logs.configure(settings.log_level, settings.log_format)
        asyncio.run(_serve(settings))
    else:
        logs.configure("WARNING")
        sys.exit(asyncio.run(_admin(args)))


async def _serve(settings: Settings) -> None:
    server = App(settings)
    await server.start()
    assert server.manager is not None
    await _ensure_dev_key(server.manager, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # Everything made at start-up lives for the process: keep it out of the collector's way
    # (halves GC time and cuts CreateSession p99 under load).
    gc.collect()
    gc.freeze()
    for line in _engine_lines(server, settings):
        print(line, flush=True)
    print(f"parleyd {__version__} listening on {settings.host}:{server.port}", flush=True)
    link = await _demo_link(server)
    if link:
        print(f"Talk to the demo character in a browser: {link}", flush=True)
    waiter = asyncio.create_task(server.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("draining", extra={"grace_ms": settings.drain_timeout_ms})
    await server.stop()
    waiter.cancel()
    stopper.cancel()


def _engine_lines(server: App, settings: Settings) -> list[str]:
    """What of the built-in engine works, one line per component ("engine: voice unavailable —
    libespeak-ng.so.1 not found; install espeak-ng ..."; "engine: speech recognition ok")."""
    if settings.engine != "on":
        return ["engine: off (users of BUILTIN sessions are refused)"]
    if server.engine_check is None:
        return ["engine: unavailable, see the log (users of BUILTIN sessions are refused)"]
    return server.engine_check.lines()


DEMO_SITUATION = (
    "You are Brom, the blacksmith of Oakvale. A sword costs forty gold coins. A shield costs "
    "twenty five gold coins. Your forge stands next to the old well. The mayor is Elsa."
)


async def _demo_link(server: App) -> str:
    """A fresh VIDEO session of the first API key, as a link to the demo page (or "")."""
    if server.http is None or server.manager is None:
        return ""
    keys = [k for k in await server.manager.list_api_keys() if not k.revoked]
    if not keys:
        return ""
    created = await server.manager.create_session(
        keys[0],
        SessionSpec(
            agent_id="brom",
            profile="shopkeeper",
            situation=DEMO_SITUATION,
            connection_type=ConnectionType.VIDEO,
            metadata={"demo": "true"},
        ),
        request_id="",
        api_key_plaintext="",
    )
    return f"{server.http.url}/#session={created.session.id}&token={created.access_token}"


async def _ensure_dev_key(manager: SessionManager, settings: Settings) -> None:
    """On the first start of an empty database, make a key so a newcomer can call at once."""
    if await manager.count_api_keys() > 0:
        return
    _, plaintext = await manager.create_api_key(
        name=DEV_KEY_NAME, max_session_duration_ms=settings.dev_key_max_session_duration_ms
    )
    bar = "=" * 78
    print(
        f"{bar}\n"
        f"DEVELOPMENT API KEY (shown once; the database stores only its hash):\n\n"
        f"    {plaintext}\n\n"
        f"Send it as gRPC metadata:  -H 'x-api-key: {plaintext}'\n"
        f"Make more with: parleyd keys create --name NAME\n"
        f"{bar}",
        flush=True,
    )


async def _admin(args: argparse.Namespace) -> int:
    settings = load_settings(
        argparse.Namespace(database_url=args.database_url) if args.database_url else None
    )
    db = await open_database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    # The admin commands are their own small composition: the store and the manager over it.
    manager = SessionManager(Repository(db))
    try:
        if args.command == "sessions":
            return await _history(manager, args.session_id)
        return await _keys(manager, args)
    finally:
        await db.close()


async def _history(manager: SessionManager, session_id: str) -> int:
    try:
        session, messages = await manager.session_history(session_id)
    except ParleyError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(
        f"# {session.id}\t{session.state.value}\tkey {session.api_key_id}\t"
        f"agent {session.agent_id}\t{len(messages)} messages"
    )
    for m in messages:
        cut = "\t(interrupted)" if m.interrupted else ""
        print(f"{m.index}\t{m.role.value}\t{m.text}{cut}")
    return 0


async def _keys(manager: SessionManager, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        try:
            max_ms = parse_duration_ms(args.max_session_duration)
        except ValueError as exc:
            print(f"--max-session-duration: {exc}", file=sys.stderr)
            return 2
        if max_ms <= 0:
            print("--max-session-duration must be positive", file=sys.stderr)
            return 2
        key, plaintext = await manager.create_api_key(
            name=args.name, max_session_duration_ms=max_ms
        )
        print(plaintext)
        print(
            f"# key id {key.id} ({key.name}); shown once, stored hashed",
            file=sys.stderr,
        )
    elif args.keys_command == "list":
        for key in await manager.list_api_keys():
            status = "revoked" if key.revoked else "active"
            print(f"{key.id}\t{key.name}\t{key.max_session_duration_ms // 1000}s\t{status}")
    elif args.keys_command == "revoke":
        if not await manager.revoke_api_key(args.key_id):
            print(f"no key with id {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


if __name__ == "__main__":
    main()
