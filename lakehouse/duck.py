"""DuckDB sessions for the short pieces of work a build does many of: a check, a key
probe, a row hash, a profile.

Opening an in-memory DuckDB database costs about 11 ms (each database builds its own
catalog of built-in functions); a 73k-order build opened some 75 of them. A session here
is a cursor on one in-memory database per process, with a catalog of its own (an attached
in-memory database, dropped when the session ends), so the views and tables one piece of
work names never meet another's, and nothing it made outlives it. Sessions run on UTC,
so timestamps read the same whatever the machine's zone.

One thing the sessions of a process do share: DuckDB's catalog views (``information_schema``,
``duckdb_tables()``) list every attached database. Work that looks tables up there by
schema and name alone, as Soda's schema check does, takes a database of its own
(``own_database``), or it would see another session's table of the same name.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

_lock = threading.Lock()
_names = itertools.count()
_database: tuple[int, duckdb.DuckDBPyConnection] | None = None
_inherited: list[duckdb.DuckDBPyConnection] = []


def _shared() -> duckdb.DuckDBPyConnection:
    """This process's database. A forked child opens its own (DuckDB does not survive a
    fork) and never closes the parent's: that would wait on the parent's threads."""
    global _database
    if _database is None or _database[0] != os.getpid():
        if _database is not None:
            _inherited.append(_database[1])
        con = duckdb.connect()
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        _database = (os.getpid(), con)
    return _database[1]


@contextmanager
def session(*, own_database: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection of its own for one piece of work, empty at the start and
    dropped with all it holds at the end; on a database of its own with ``own_database``
    (see the module)."""
    if own_database:
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()
        return
    name = f"session_{next(_names)}"
    with _lock:
        shared = _shared()
        con = shared.cursor()
    try:
        con.execute(f"ATTACH ':memory:' AS {name}")
        con.execute(f"USE {name}")
        yield con
    finally:
        con.close()  # a caller (or Soda) may have closed it already: closing again is a no-op
        with _lock:
            cleanup = shared.cursor()
            try:
                cleanup.execute(f"DETACH DATABASE IF EXISTS {name}")
            finally:
                cleanup.close()
