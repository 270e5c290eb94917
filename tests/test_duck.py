"""DuckDB sessions: each starts empty, sees nothing of another, and leaves nothing behind."""

from __future__ import annotations

import multiprocessing
import threading

import duckdb
import pytest

from lakehouse import duck


def _names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} | {
        r[0]
        for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }


def _attached(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}


def test_sessions_open_at_once_do_not_see_each_others_tables() -> None:
    with duck.session() as first, duck.session() as second:
        for con, value in ((first, 1), (second, 2)):
            con.execute("CREATE SCHEMA marts")
            con.execute(f"CREATE TABLE marts.orders AS SELECT {value} AS order_id")
        assert first.execute("SELECT order_id FROM marts.orders").fetchall() == [(1,)]
        assert second.execute("SELECT order_id FROM marts.orders").fetchall() == [(2,)]
        # nor in the catalog views, where Soda's schema check looks a table up by name
        columns = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders'"
        assert first.execute(columns).fetchall() == [(1,)]
        assert second.execute(columns).fetchall() == [(1,)]


def test_a_session_reuses_an_idle_database_and_finds_it_empty() -> None:
    with duck.session() as con:
        con.execute("CREATE TABLE left_over AS SELECT 1 AS x")
        first = _attached(con)
    idle = len(duck._idle)
    with duck.session() as con:
        assert _names(con) == set()
        again = _attached(con)
        assert len(duck._idle) == idle - 1, "an idle database was borrowed, not a new one opened"
    assert len(duck._idle) == idle
    # the same database, with the earlier session's catalog gone and this one's in its place
    assert first - again and again - first and first & again >= {"system", "temp"}


def test_a_session_reads_timestamps_in_utc_and_survives_being_closed_by_its_user() -> None:
    with duck.session() as con:
        zone = con.execute("SELECT current_setting('TimeZone')").fetchone()
        con.close()  # Soda, handed the cursor, may close it
    assert zone is not None and zone[0] in {"UTC", "Etc/UTC"}


def test_an_error_inside_a_session_drops_its_catalog_too() -> None:
    with pytest.raises(duckdb.CatalogException), duck.session() as con:
        con.execute("CREATE TABLE kept_by_mistake AS SELECT 1 AS x")
        con.execute("SELECT * FROM no_such_table")
    with duck.session() as con:
        assert "kept_by_mistake" not in _names(con)


def test_sessions_in_threads_work_side_by_side() -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(20):
                with duck.session() as con:
                    con.execute(f"CREATE TABLE t AS SELECT range AS x FROM range({n})")
                    assert con.execute("SELECT count(*) FROM t").fetchall() == [(n,)]
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in (10, 20, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _count_in_child(queue: multiprocessing.Queue[int]) -> None:
    with duck.session() as con:
        queue.put(con.execute("SELECT count(*) FROM range(7)").fetchall()[0][0])


def test_a_forked_child_opens_its_own_database() -> None:
    with duck.session() as con:  # the parent's database exists before the fork
        con.execute("SELECT 1").fetchall()
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = context.Queue()
    child = context.Process(target=_count_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 7


@pytest.mark.skipif(duck._resident_bytes() is None, reason="needs /proc to read resident memory")
def test_a_large_session_gives_its_memory_back_to_the_system() -> None:
    """DuckDB keeps what a database used until it is closed: a session that grew the
    process by much closes its database rather than pool it, so a build's later steps
    do not carry the memory of its largest query."""
    before = duck._resident_bytes()
    assert before is not None
    with duck.session() as con:
        con.execute(
            "CREATE TABLE big AS SELECT range AS a, md5(range::VARCHAR) AS b FROM range(5000000)"
        )
        during = duck._resident_bytes()
    after = duck._resident_bytes()
    assert during is not None and after is not None
    assert during - before > 2 * duck.KEPT_GROWTH_BYTES, "the table did not grow the process"
    assert after - before < duck.KEPT_GROWTH_BYTES
