"""The local Dagster instance (a SQLite ``DAGSTER_HOME``): its configuration, and an event
log that keeps its database connections open.

Dagster's SQLite event log creates a SQLAlchemy engine, opens the database file and
disposes of it all again for every event it stores. A build stores a few events per
asset check (planned, evaluated, its output) and the sample's 21 tables have 233 checks:
storing them took 10.8 s of a 28 s build of the 73k-order sample, 2.3 s with this.
``PooledSqliteEventLogStorage`` is that event log with one engine per database file,
kept for the index and the most recently used runs (older ones are disposed of, so a
webserver or daemon reading many runs holds few files open), and commits that do not wait
for the disk (``_commit_without_fsync``). Everything else, the files, their schema and WAL
journal, the locking, is Dagster's own.

Deployments configure PostgreSQL instead (``infra/dagster/dagster.yaml``).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

CONFIG_FILE = "dagster.yaml"
KEPT_RUN_DATABASES = 8
"""Run databases whose engines are kept beside the index's (most recently used first)."""


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, reusing one engine (and its open connection) per
    database file instead of creating and disposing of one per stored event, and
    remembering which tables exist."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables_present: set[str] = set()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        # Dagster's own constructs SqliteEventLogStorage by name, not cls.
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            event.listen(engine, "connect", _commit_without_fsync)
            self._engines[shard] = engine
        self._engines.move_to_end(shard, last=False)
        while len(self._engines) > KEPT_RUN_DATABASES + 1:
            _, oldest = self._engines.popitem()
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Dagster asks before storing every asset check evaluation, each time with an
        engine of its own; a table, once there, stays (no migration drops one)."""
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present

    def wipe(self) -> None:
        with self._db_lock:
            self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        with self._db_lock:
            self._dispose_engines()
        super().dispose()

    def _dispose_engines(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


def _commit_without_fsync(dbapi_connection: Any, _record: Any) -> None:
    """WAL with ``synchronous=NORMAL``: a commit is written to the journal but not synced
    to disk (the journal is, at checkpoints). A killed process loses nothing committed; a
    power cut may lose the last events, never the database. A build stores some 870
    events (0.4-0.9 s of syncs on this machine's disk). The lake's own commits are Delta's,
    not these."""
    cursor = dbapi_connection.cursor()
    try:
        # WAL first, as Dagster makes a new database (it sets it only after this first
        # connection): NORMAL is safe over a WAL journal, not over a rollback one
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def local_config(home: Path) -> dict[str, object]:
    """The instance configuration of a local ``DAGSTER_HOME``: telemetry off, and the
    pooled event log where Dagster's own SQLite event log would keep its files."""
    return {
        "telemetry": {"enabled": False},
        "event_log_storage": {
            # by name: run as `python -m lakehouse.instance`, __name__ is "__main__"
            "module": "lakehouse.instance",
            "class": PooledSqliteEventLogStorage.__name__,
            "config": {"base_dir": str(home.resolve() / "history" / "runs")},
        },
    }


LEGACY_CONFIG = "telemetry:\n  enabled: false\n"
"""What ``make setup`` wrote before this module: ours to replace, not a user's."""


def ensure_local_config(home: Path) -> bool:
    """Write ``home``'s dagster.yaml unless it has one of its own (a user's is never
    replaced; the telemetry-only file earlier versions wrote is); True if it was written."""
    config = home / CONFIG_FILE
    if config.exists() and config.read_text() != LEGACY_CONFIG:
        return False
    home.mkdir(parents=True, exist_ok=True)
    partial = config.with_suffix(".partial")
    partial.write_text(yaml.safe_dump(local_config(home), sort_keys=False))
    partial.replace(config)
    return True


if __name__ == "__main__":
    # `make setup`: python -m lakehouse.instance <DAGSTER_HOME>
    ensure_local_config(Path(sys.argv[1]))
