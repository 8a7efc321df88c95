"""The database: SQLite (WAL) by default, PostgreSQL (asyncpg) for scale.

The repository hands the database plain synchronous functions of a SQLAlchemy Core `Connection`
(`await db.read(fn)`, `await db.write(fn)`): one function is one unit of work, one thread hop.

- SQLite runs them on threads of its own, each owning one pysqlite connection. ONE writer thread
  (SQLite allows one writer anyway, so nobody sleeps in its busy handler) runs every write job
  that is waiting in one transaction and COMMITs once (group commit); one job's error undoes that
  job alone (see `_transaction`). Callers hear of success only after that COMMIT. While a group
  is at the writer, the event loop gathers the next one, so the busier the server, the larger
  the groups. A few reader threads run reads beside it (WAL readers never block the writer);
  each read statement sees everything committed before it started. Jobs submitted in one
  event-loop iteration travel together: one thread wake-up, one `call_soon_threadsafe` back.
- PostgreSQL runs the same functions through the AsyncEngine: `conn.run_sync(fn)` inside one
  transaction per write, exactly the concurrency the repository's compare-and-set relies on.

Opening a database applies the Alembic migrations, so a fresh file or an empty PostgreSQL database
is ready to use and an old one is brought up to date.

Faults of the database itself are translated here, in `read` and `write` and nowhere else
(`storage_fault`), into errors a caller can act on: a database that cannot be reached (refused or
dropped connections, connect timeouts: SQLAlchemy's OperationalError, DisconnectionError or
closed-connection InterfaceError, asyncpg's connection errors, SQLSTATE class 08, OSError,
TimeoutError), is busy (no pooled connection free) or cannot be written (SQLite SQLITE_READONLY,
SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_BUSY; PostgreSQL read-only) becomes `Unavailable`; a full
disk (SQLITE_FULL, PostgreSQL disk_full) becomes `ResourceExhausted`. Everything else (constraint
violations, a bug's SQL error) passes through as it was. Unreachable sets `unreachable`, which
the health probe of the server watches; a full disk or a read-only database is logged once
(WARNING) until a write succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from parleyd.domain.errors import ParleyError, ResourceExhausted, Unavailable

log = logging.getLogger("parleyd.store")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Execution option that marks a transaction as one that will write (see _configure_sqlite).
WRITE_OPTION = "parleyd_write"

T = TypeVar("T")
Work = Callable[[Connection], T]
OnCommit = Callable[[Any], None]
OnFail = Callable[[BaseException], None]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_READERS = 2
# Write jobs gathered into one transaction at most (a list from one loop iteration is taken
# whole): bounds how long the write lock is held in one go.
MAX_GROUP_COMMIT = 256
# How long opening a PostgreSQL connection may take (asyncpg's default is 60 s): past it the
# call is answered UNAVAILABLE instead of hanging while the database is out of reach.
PG_CONNECT_TIMEOUT_S = 5.0


class DatabaseClosed(RuntimeError):
    pass


# -- faults of the database, translated for the caller ------------------------------------------

UNREACHABLE = "the database is unreachable; try again shortly"
# SQLite primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
# PostgreSQL SQLSTATEs: class 08 (connection exception) and these mean "not reachable now".
_PG_UNREACHABLE = frozenset({"57P01", "57P02", "57P03", "53300"})
_PG_DISK_FULL, _PG_READ_ONLY = "53100", "25006"


class StorageFault:
    """What a caller is told about a fault of the database: `error` (Unavailable or
    ResourceExhausted, whose message names no host, port or path); `detail`, the driver's own
    words, for the log only; `unreachable` when the database could not be reached at all."""

    __slots__ = ("detail", "error", "unreachable")

    def __init__(self, error: ParleyError, detail: str, *, unreachable: bool = False) -> None:
        self.error = error
        self.detail = detail
        self.unreachable = unreachable


def storage_fault(exc: BaseException) -> StorageFault | None:
    """The fault `exc` stands for, or None when it is not the database's (a constraint, a bug)."""
    if isinstance(exc, ParleyError):
        return None
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, sqlite3.Error):
            # SQLite says exactly what is wrong; what it does not mark is the module's own
            # complaint about a statement (a bug), whatever class it came in.
            code = getattr(e, "sqlite_errorcode", None)
            return _sqlite_fault(code & 0xFF, str(e)) if isinstance(code, int) else None
    for e in chain:
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            if state == _PG_DISK_FULL:
                return StorageFault(ResourceExhausted("the database's disk is full"), str(e))
            if state == _PG_READ_ONLY:
                return StorageFault(Unavailable("the database is read-only right now"), str(e))
            if state.startswith("08") or state in _PG_UNREACHABLE:
                return _unreachable(e)
    if isinstance(exc, DatabaseClosed):
        return StorageFault(Unavailable("the database is closed: the server is stopping"), "")
    if isinstance(exc, PoolTimeoutError):
        busy = "the database is busy (no connection free); try again shortly"
        return StorageFault(Unavailable(busy), str(exc))
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return _unreachable(exc)
    for e in chain:
        if isinstance(e, OperationalError | DisconnectionError | OSError | TimeoutError):
            return _unreachable(e)
        if isinstance(e, InterfaceError) and "closed" in str(e):
            return _unreachable(e)  # "connection is closed"; other InterfaceErrors are bugs
        if type(e).__module__.startswith("asyncpg") and "Connection" in type(e).__name__:
            return _unreachable(e)  # ConnectionDoesNotExistError, PostgresConnectionError...
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver's error it wraps (`orig`), and their causes (at most a few). Only
    explicit causes: an error merely raised while another was handled is not its fault."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(out) < 8:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        orig = getattr(e, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None, e.__cause__]
    return out


def _sqlite_fault(code: int, message: str) -> StorageFault | None:
    """SQLite's own message ("database or disk is full") names no path: the caller sees it."""
    if code == _SQLITE_FULL:
        error: ParleyError = ResourceExhausted(f"the database's disk is full ({message})")
    elif code == _SQLITE_READONLY:
        error = Unavailable(f"the database is read-only: it cannot be written now ({message})")
    elif code in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
        error = Unavailable(
            f"the database file cannot be used now ({message}): its file system may be "
            "read-only or failing"
        )
    elif code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        error = Unavailable(f"the database is busy ({message})")
    else:
        return None  # "no such table" and the like: a bug, not a fault of the storage
    return StorageFault(error, message)


def _unreachable(e: BaseException) -> StorageFault:
    detail = f"{type(e).__name__}: {e}".strip()
    return StorageFault(Unavailable(UNREACHABLE), detail, unreachable=True)


class Database:
    """An open database. `engine` (an AsyncEngine) is there for migrations and ad-hoc access;
    the repository goes through `read` and `write`, where faults of the database itself become
    `Unavailable` or `ResourceExhausted` (see `storage_fault`)."""

    def __init__(self, engine: AsyncEngine, url: str, runner: _SqliteRunner | None = None) -> None:
        self.engine = engine
        self.url = url
        self._sqlite = runner
        # Set when a call found the database unreachable; the health probe clears it.
        self.unreachable = asyncio.Event()
        # The write fault last logged (a full disk, a read-only file) until a write succeeds.
        self._write_fault: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def read(self, fn: Work[T]) -> T:
        """Runs `fn` on a connection that sees everything committed before it started."""
        try:
            if self._sqlite is not None:
                return await self._sqlite.read(fn)
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)
        except Exception as exc:
            if (error := self._fault(exc, write=False)) is None:
                raise
            raise error from exc

    async def write(
        self, fn: Work[T], on_commit: OnCommit | None = None, on_fail: OnFail | None = None
    ) -> T:
        """Runs `fn` in a write transaction; returns its result once that transaction committed.

        An exception from `fn` rolls back everything `fn` did (and nothing else) and is raised
        here. Hooks run on the event loop once the transaction has ended, before this returns,
        and even if the caller was cancelled meanwhile (the work is not interrupted then):
        `on_commit(result)` after the COMMIT, `on_fail(exc)` otherwise. Caches update there.
        """
        try:
            if self._sqlite is not None:
                result = await self._sqlite.write(fn, on_commit, on_fail)
            elif on_commit is None and on_fail is None:
                result = await self._write_async(fn)
            else:
                task = asyncio.ensure_future(self._write_async(fn, on_commit, on_fail))
                task.add_done_callback(_retrieve)
                result = await asyncio.shield(task)
        except Exception as exc:
            if (error := self._fault(exc, write=True)) is None:
                raise
            raise error from exc
        if self._write_fault is not None:
            log.info("database writes work again (after: %s)", self._write_fault)
            self._write_fault = None
        return result

    async def ping(self) -> None:
        """One cheap round trip (SELECT 1); raises Unavailable when the database is out of reach."""
        await self.read(_select_one)

    def _fault(self, exc: Exception, *, write: bool) -> ParleyError | None:
        """What `read`/`write` raise instead of `exc` (None: `exc` itself, it is no fault of the
        database's)."""
        fault = storage_fault(exc)
        if fault is None:
            return None
        if fault.unreachable:
            self.unreachable.set()
        elif write and self._write_fault != fault.error.message:
            # Once per kind of fault, not per call: a full disk fails every write until fixed.
            self._write_fault = fault.error.message
            log.warning("database write failed: %s", fault.error.message)
        return fault.error

    async def _write_async(
        self, fn: Work[T], on_commit: OnCommit | None = None, on_fail: OnFail | None = None
    ) -> T:
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**{WRITE_OPTION: True})
                async with conn.begin():
                    result = await conn.run_sync(fn)
        except BaseException as exc:
            if on_fail is not None:
                _run_hook(on_fail, exc)
            raise
        if on_commit is not None:
            _run_hook(on_commit, result)
        return result

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()
        await self.engine.dispose()


async def open_database(url: str, *, sqlite_synchronous: str = "NORMAL") -> Database:
    """Connects, applies migrations, and returns the ready database."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    memory = sqlite and parsed.database in (None, "", ":memory:")
    if sqlite:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if memory:
            # One connection for everything: each new one would open an empty database.
            kwargs["poolclass"] = StaticPool
        else:
            Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
            # Migrations and ad-hoc access only: the repository has connections of its own.
            kwargs["pool_size"] = 2
            kwargs["max_overflow"] = 2
        kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,
        }
    else:
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 10
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"timeout": PG_CONNECT_TIMEOUT_S}
    engine = create_async_engine(parsed, **kwargs)
    if sqlite:
        _configure_sqlite(engine, sqlite_synchronous)
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    # An in-memory database lives in the async engine's one connection: it serves everything.
    runner: _SqliteRunner | None = None
    if sqlite and not memory:
        await engine.dispose()  # its pooled connection (and aiosqlite thread) is not needed now
        runner = _SqliteRunner(parsed.set(drivername="sqlite+pysqlite"), sqlite_synchronous)
    return Database(engine, url, runner)


def _sqlite_pragmas(dbapi_conn: Any, synchronous: str) -> None:
    # WAL lets readers run beside the single writer; NORMAL syncs at checkpoints, which in WAL
    # mode loses no committed transaction on a process crash (FULL also survives power loss).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, synchronous)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write transaction takes the write lock at BEGIN: a deferred one that reads and then
        # writes can fail with SQLITE_BUSY at once, where BEGIN IMMEDIATE waits its turn.
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    # pysqlite's own implicit BEGIN must be off for the one above to be the only one.
    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None


# -- statements executed straight on the SQLite driver ------------------------------------------

# (statement, parameter names) -> (SQL, [(parameter, bind processor)]), or None: not eligible
_DmlPlan = tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]
_DML_PLANS: dict[tuple[Any, tuple[str, ...]], _DmlPlan | None] = {}


def execute_dml(conn: Connection, stmt: Any, params: dict[str, Any] | list[dict[str, Any]]) -> int:
    """`conn.execute(stmt, params).rowcount` for an INSERT/UPDATE/DELETE built once at import.

    On SQLite the statement is compiled once per set of parameter names and then handed to the
    driver directly with its values run through the same bind processors (JSON, Boolean) that
    SQLAlchemy would apply: about half the CPU of a full Core execution. Statements that need
    more than that (a Python-side column default for a missing value) and other databases take
    the ordinary path.
    """
    if conn.dialect.name != "sqlite":
        return int(conn.execute(stmt, params).rowcount)
    many = isinstance(params, list)
    first: dict[str, Any] = params[0] if isinstance(params, list) else params
    key = (stmt, tuple(first))
    if key in _DML_PLANS:
        plan = _DML_PLANS[key]
    else:
        plan = _DML_PLANS[key] = _dml_plan(conn, stmt, list(first), many)
    if plan is None:
        return int(conn.execute(stmt, params).rowcount)
    sql, binds = plan
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    try:
        if many:
            assert isinstance(params, list)
            rows = [tuple(p[n] if f is None else f(p[n]) for n, f in binds) for p in params]
            return int(dbapi.executemany(sql, rows).rowcount)
        row = tuple(first[n] if f is None else f(first[n]) for n, f in binds)
        return int(dbapi.execute(sql, row).rowcount)
    except conn.dialect.loaded_dbapi.Error as exc:
        # The exception SQLAlchemy would raise (IntegrityError and so on).
        raise DBAPIError.instance(
            sql, params, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc


def _dml_plan(conn: Connection, stmt: Any, names: list[str], many: bool) -> _DmlPlan | None:
    compiled = stmt.compile(dialect=conn.dialect, column_keys=names, for_executemany=many)
    order = compiled.positiontup
    if order is None or any(n not in names for n in order):
        return None
    binds = [(n, compiled.binds[n].type.bind_processor(conn.dialect)) for n in order]
    return str(compiled), binds


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _select_one(connection: Connection) -> None:
    connection.execute(_SELECT_ONE)


_SELECT_ONE = text("SELECT 1")


# -- SQLite: one writer thread with group commit, a few reader threads ---------------------------


class _Job:
    __slots__ = ("fn", "future", "loop", "on_commit", "on_fail")

    def __init__(
        self,
        fn: Work[Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        on_commit: OnCommit | None,
        on_fail: OnFail | None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.on_commit = on_commit
        self.on_fail = on_fail


# (job, succeeded, result or exception)
_Outcome = tuple[_Job, bool, Any]


class _SqliteRunner:
    def __init__(self, url: URL, synchronous: str, readers: int = SQLITE_READERS) -> None:
        # NullPool: each thread opens its own connection once and keeps it for its lifetime.
        self._engine: Engine = create_engine(url, poolclass=NullPool)

        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # No implicit BEGIN from pysqlite: the writer says BEGIN IMMEDIATE itself, and reads
            # run in autocommit (one statement, one consistent snapshot).
            dbapi_conn.isolation_level = None
            _sqlite_pragmas(dbapi_conn, synchronous)

        # Jobs travel in lists: everything one event-loop iteration submits wakes a thread once.
        self._writes: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._reads: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._pending: dict[tuple[bool, asyncio.AbstractEventLoop], list[_Job]] = {}
        # Loops with a group of writes at the writer: their next writes wait and go together.
        self._writing: set[asyncio.AbstractEventLoop] = set()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._writer, name="parleyd-sqlite-writer", daemon=True)
        ] + [
            threading.Thread(target=self._reader, name=f"parleyd-sqlite-reader-{i}", daemon=True)
            for i in range(readers)
        ]
        for t in self._threads:
            t.start()

    # -- the event loop's side

    def _submit(
        self, write: bool, fn: Work[T], on_commit: OnCommit | None, on_fail: OnFail | None
    ) -> asyncio.Future[T]:
        if self._closed:
            raise DatabaseClosed("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, future, loop, on_commit, on_fail)
        key = (write, loop)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = [job]
            if not (write and loop in self._writing):
                loop.call_soon(self._flush, key)
        else:
            pending.append(job)
        return future

    def _flush(self, key: tuple[bool, asyncio.AbstractEventLoop]) -> None:
        write, loop = key
        if write and loop in self._writing:
            return  # goes when the group in flight has committed (_written)
        jobs = self._pending.pop(key, None)
        if jobs:
            if write:
                self._writing.add(loop)
            (self._writes if write else self._reads).put(jobs)

    def _written(self, loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
        """On the loop: a group of its writes has ended; the writes that waited go next."""
        try:
            _resolve(outcomes)
        finally:
            self._writing.discard(loop)
            if (True, loop) in self._pending:
                self._flush((True, loop))

    async def read(self, fn: Work[T]) -> T:
        return await self._submit(False, fn, None, None)

    async def write(self, fn: Work[T], on_commit: OnCommit | None, on_fail: OnFail | None) -> T:
        try:
            future = self._submit(True, fn, on_commit, on_fail)
        except BaseException as exc:  # never queued: its hook would never run otherwise
            if on_fail is not None:
                on_fail(exc)
            raise
        return await future

    async def close(self) -> None:
        """Finishes every job already submitted, then closes the connections."""
        if self._closed:
            return
        self._closed = True
        # Everything still gathering goes now, even behind a group in flight: the threads stop
        # only at the end of their queues.
        for (write, _loop), jobs in list(self._pending.items()):
            (self._writes if write else self._reads).put(jobs)
        self._pending.clear()
        self._writes.put(None)
        for _ in self._threads[1:]:
            self._reads.put(None)
        for t in self._threads:
            await asyncio.to_thread(t.join)
        self._engine.dispose()

    # -- the threads' side

    def _reader(self) -> None:
        with self._engine.connect() as conn:
            while (jobs := self._reads.get()) is not None:
                by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
                for job in jobs:
                    if job.future.cancelled():  # the caller gave up before we started
                        continue
                    try:
                        outcome: _Outcome = (job, True, job.fn(conn))
                    except BaseException as exc:
                        outcome = (job, False, exc)
                    try:
                        conn.rollback()  # ends SQLAlchemy's (empty) autobegun transaction
                    except Exception:  # the next read will say what is wrong
                        log.exception("SQLite reader: rollback failed")
                    by_loop.setdefault(job.loop, []).append(outcome)
                for loop, outcomes in by_loop.items():
                    _post(loop, outcomes)

    def _writer(self) -> None:
        with self._engine.connect() as conn:
            dbapi = conn.connection.driver_connection
            assert dbapi is not None
            stop = False
            while not stop:
                first = self._writes.get()
                if first is None:
                    break
                batch = list(first)
                while len(batch) < MAX_GROUP_COMMIT:
                    try:
                        more = self._writes.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.extend(more)
                try:
                    self._commit_group(conn, dbapi, batch)
                except BaseException as exc:  # a bug here must not leave callers waiting forever
                    log.exception("SQLite writer failed")
                    self._post_group([(job, False, exc) for job in batch])

    def _commit_group(self, conn: Connection, dbapi: Any, batch: list[_Job]) -> None:
        """Runs the jobs in one transaction and resolves them after its COMMIT."""
        jobs: list[_Job] = []
        outcomes: list[_Outcome] = []
        for job in batch:
            if job.future.cancelled():  # given up before it ran: it does nothing
                outcomes.append((job, False, asyncio.CancelledError()))
            else:
                jobs.append(job)
        if jobs:
            outcomes.extend(self._transaction(conn, dbapi, jobs))
        self._post_group(outcomes)

    def _post_group(self, outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, some in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(self._written, loop, some)

    @staticmethod
    def _transaction(conn: Connection, dbapi: Any, jobs: list[_Job]) -> list[_Outcome]:
        """Each job's outcome, all committed together (or nothing, if the transaction failed).

        A job's error must undo that job alone. Errors are rare, so the jobs first run back to
        back; if one fails, the transaction is rolled back and the group runs again with each
        job in a savepoint of its own (jobs are pure functions of the database, safe to rerun).
        A job alone in its transaction needs no savepoint: its error rolls the transaction back.
        BEGIN, SAVEPOINT and COMMIT go straight to the driver (see _driver_sql).
        """
        try:
            _driver_sql(conn, dbapi, "BEGIN IMMEDIATE")
            results: list[_Outcome] = []
            for job in jobs:
                try:
                    results.append((job, True, job.fn(conn)))
                except BaseException as exc:
                    _end(conn, dbapi, commit=False)
                    if len(jobs) == 1:
                        return [(job, False, exc)]
                    break
            else:
                _end(conn, dbapi, commit=True)
                return results
            # Again, each job in a savepoint: the failing one is undone, the others commit.
            results = []
            _driver_sql(conn, dbapi, "BEGIN IMMEDIATE")
            for job in jobs:
                _driver_sql(conn, dbapi, "SAVEPOINT job")
                try:
                    result = job.fn(conn)
                except BaseException as exc:
                    _driver_sql(conn, dbapi, "ROLLBACK TO job")
                    _driver_sql(conn, dbapi, "RELEASE job")
                    results.append((job, False, exc))
                else:
                    _driver_sql(conn, dbapi, "RELEASE job")
                    results.append((job, True, result))
            _end(conn, dbapi, commit=True)
            return results
        except BaseException as exc:
            # BEGIN, a savepoint or COMMIT itself failed: nothing of this group is committed.
            # A full disk or a read-only file is logged once where it is translated (write).
            if storage_fault(exc) is None:
                log.error("SQLite write transaction failed: %r", exc)
            try:
                _end(conn, dbapi, commit=False)
            except BaseException:  # the connection may be gone; the error below says why
                log.exception("rollback after a failed write transaction failed")
            return [(job, False, exc) for job in jobs]


def _driver_sql(conn: Connection, dbapi: Any, sql: str) -> None:
    """Transaction control straight on the driver: the writer's own, a fraction of the CPU of
    a Core execution. Its errors are raised as SQLAlchemy's, like everything else here."""
    try:
        dbapi.execute(sql)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            sql, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc


def _end(conn: Connection, dbapi: Any, *, commit: bool) -> None:
    """COMMITs or rolls back on the driver, then ends the Connection's own bookkeeping of a
    transaction if a job's Core statement started one (on the driver that is a no-op now)."""
    try:
        if commit:
            dbapi.commit()
        else:
            dbapi.rollback()
    except conn.dialect.loaded_dbapi.Error as exc:
        sql = "COMMIT" if commit else "ROLLBACK"
        raise DBAPIError.instance(
            sql, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc
    if conn.in_transaction():
        if commit:
            conn.commit()
        else:
            conn.rollback()


def _run_hook(hook: Callable[[Any], None], value: Any) -> None:
    try:
        hook(value)
    except Exception:  # the transaction's outcome stands; a hook's bug must not change it
        log.exception("database hook failed")


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A shielded write whose caller was cancelled: its error has nobody else to read it.
    if not task.cancelled():
        task.exception()


def _post(loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_resolve, outcomes)


def _resolve(outcomes: list[_Outcome]) -> None:
    """On the event loop, in commit order: post-commit hooks first, then the callers."""
    for job, ok, value in outcomes:
        hook = job.on_commit if ok else job.on_fail
        if hook is not None:
            _run_hook(hook, value)
        if job.future.cancelled():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
