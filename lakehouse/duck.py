"""DuckDB sessions for the short pieces of work a build does many of: a check, a key
probe, a row hash, a profile.

Opening an in-memory DuckDB database costs about 11 ms (each database builds its own
catalog of built-in functions); a 73k-order build opened some 75 of them. A session here
borrows an idle in-memory database of this process (opening one only when every other is
in use, by a session still open or another thread's) and works in a catalog of its own
(an in-memory database attached to it, detached at the end, with all it holds), so it
starts empty and leaves nothing behind, in about 1 ms.

A database serves one session at a time. That matters beyond names: DuckDB's catalog
views (``information_schema``, ``duckdb_tables()``) list every database attached to an
instance, and Soda's schema check looks a table up there by schema and name alone; two
sessions sharing an instance would see each other's tables of the same name.

A database goes back to the pool only if its session grew the process by little
(``KEPT_GROWTH_BYTES``): DuckDB's allocator keeps the memory a database's work used until
the database is closed, and a large session's (hashing or judging millions of rows)
would otherwise stay resident through the rest of the build, on top of its later peaks.
Where the process's resident size cannot be read (no ``/proc``), every database is closed
after its session, as a fresh one per session would be.

Sessions run on UTC, so timestamps read the same whatever the machine's zone.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

KEPT_GROWTH_BYTES = 64 * 1024 * 1024
"""A session that grew the process by more closes its database (see the module)."""

_lock = threading.Lock()
_names = itertools.count()
_idle: list[duckdb.DuckDBPyConnection] = []
_owner = os.getpid()
_inherited: list[duckdb.DuckDBPyConnection] = []


def _borrow() -> duckdb.DuckDBPyConnection:
    """An idle database of this process, or a new one. A forked child never uses (nor
    closes: that would wait on the parent's threads) the databases it inherited."""
    global _owner
    with _lock:
        if _owner != os.getpid():
            _inherited.extend(_idle)
            _idle.clear()
            _owner = os.getpid()
        if _idle:
            return _idle.pop()
    database = duckdb.connect()
    database.execute("SET GLOBAL TimeZone = 'UTC'")
    return database


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _give_back(database: duckdb.DuckDBPyConnection, resident_before: int | None) -> None:
    """Back to the pool, or closed when the session grew the process (see the module)."""
    resident_after = _resident_bytes()
    small = (
        resident_before is not None
        and resident_after is not None
        and resident_after - resident_before <= KEPT_GROWTH_BYTES
    )
    with _lock:
        if small and _owner == os.getpid():
            _idle.append(database)
            return
    database.close()


@contextmanager
def session() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection of its own for one piece of work, empty at the start and
    dropped with all it holds at the end."""
    resident_before = _resident_bytes()
    database = _borrow()
    name = f"session_{next(_names)}"
    con = database.cursor()
    try:
        con.execute(f"ATTACH ':memory:' AS {name}")
        con.execute(f"USE {name}")
        yield con
    finally:
        con.close()  # a caller (or Soda) may have closed it already: closing again is a no-op
        cleanup = database.cursor()
        try:
            cleanup.execute(f"DETACH DATABASE IF EXISTS {name}")
            detached = True
        except duckdb.Error:
            detached = False
        finally:
            cleanup.close()
        if detached:
            _give_back(database, resident_before)
        else:
            database.close()  # not left in a state the next session would see
