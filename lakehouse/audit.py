"""The audit trail: ``_audit``, an append-only Delta table with one row per change to the
lake's data, saying when, in which environment, by which run and principal, what changed
(table, Delta versions before and after, rows affected) and why.

**Where rows come from.** Every commit the lakehouse makes carries its run id, asset,
principal, and (for an operator's verbs) action and reason in its commit info, atomically
with the data (``delta.Stamp``). ``record`` copies those commits into ``_audit``, which
gathers every table in one place and outlives Delta log cleanup and vacuum. Each append
carries, per table, the newest version it recorded (a cursor, as a Delta app transaction
in the same commit), so a crash never loses or doubles a row and two recorders never
both record one commit (the second conflicts, re-reads, and finds nothing left to do).
A commit made outside the lakehouse (no run id) is recorded too, as ``outside``. Changes
that are not a commit of a table (a branch torn down, a branch's pins refreshed) are
recorded as events (``record_event``).

**What can be checked.** ``verify`` compares the trail with every table's Delta history:
each version of each table must have its row (a version whose commit the log no longer
holds and the trail never recorded is a gap for good), and the trail's own log must hold
appends only. Nothing in the project updates or deletes audit rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import polars as pl
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.storage import Lake

AUDIT_TABLE = "_audit"
SUBJECT_KEY = "lakehouse_subject"
"""An erasure's subject, as a keyed hash (``lakehouse.erasure``)."""


class Action(StrEnum):
    MATERIALIZATION = "materialization"
    """A build changed the table's rows (append, merge, replace)."""
    BOOKKEEPING = "bookkeeping"
    """A commit of cursors or markers only: no row changed."""
    PUBLICATION = "publication"
    """A version passed its blocking checks; readers now read it."""
    WITHDRAWAL = "withdrawal"
    """A version failed its blocking checks; the published one was restored over it."""
    RESTORE = "restore"
    MAINTENANCE = "maintenance"
    """Compaction or vacuum: files rewritten or deleted, rows unchanged."""
    QUARANTINE_RELEASE = "quarantine_release"
    QUARANTINE_DISCARD = "quarantine_discard"
    REINGEST_REQUEST = "reingest_request"
    ERASURE = "erasure"
    """A person's rows deleted on request (the subject recorded as a keyed hash)."""
    TEARDOWN = "teardown"
    REPIN = "repin"
    OUTSIDE = "outside"
    """A commit without the lakehouse's stamp: someone wrote the table by other means."""


SCHEMA: dict[str, Any] = {
    "event_id": pl.String,
    "occurred_at": pl.Datetime("us", "UTC"),
    "recorded_at": pl.Datetime("us", "UTC"),
    "environment": pl.String,
    "action": pl.String,
    "table": pl.String,
    "asset_key": pl.String,
    "operation": pl.String,
    "version_before": pl.Int64,
    "version_after": pl.Int64,
    "rows_affected": pl.Int64,
    "run_id": pl.String,
    "principal": pl.String,
    "reason": pl.String,
    "details": pl.String,
}
"""``event_id`` is ``<layer>/<table>@v<version>`` for a commit, ``<action>:<uuid>`` for an
event; ``details`` is JSON (the commit's operation parameters and metrics)."""

MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})
APPEND_MODES = frozenset({"Append", "ErrorIfExists"})
"""The only commits the trail's own log may hold: appends (and its creation)."""


def audited_tables() -> list[str]:
    """Every table whose changes the trail records (the catalog's), as ``layer/table``."""
    from lakehouse.catalog import all_tables

    return [t.path for t in all_tables()]


def trail_uri(lake: Lake) -> str:
    return lake.uri(AUDIT_TABLE)


def _own_tables(lake: Lake) -> Iterator[tuple[str, DeltaTable]]:
    """This lake's own tables (a branch: those it has written), opened at their newest."""
    for name in audited_tables():
        layer, _, table = name.partition("/")
        dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
        if dt is not None:
            yield name, dt


def _rows_affected(operation: str, metrics: dict[str, Any]) -> int | None:
    if operation == "MERGE":
        return sum(
            int(metrics.get(f"num_target_rows_{kind}", 0))
            for kind in ("inserted", "updated", "deleted")
        )
    for key in ("num_added_rows", "num_deleted_rows", "num_updated_rows"):
        if key in metrics:
            return int(metrics[key])
    return None


def _action(commit: dict[str, Any], operation: str, rows: int | None) -> Action:
    if commit.get(delta.ACTION_KEY) in Action.__members__.values():
        return Action(commit[delta.ACTION_KEY])
    if delta.RUN_ID_KEY not in commit:
        return Action.OUTSIDE
    if commit.get(delta.MAINTENANCE_KEY) or operation in MAINTENANCE_OPERATIONS:
        return Action.MAINTENANCE
    if delta.REJECTED_KEY in commit:
        return Action.WITHDRAWAL
    if operation == "RESTORE":
        return Action.RESTORE
    if delta.PUBLISHED_VERSION_KEY in commit:
        return Action.PUBLICATION
    return Action.MATERIALIZATION if rows else Action.BOOKKEEPING


def commit_row(
    lake: Lake, table: str, commit: dict[str, Any], recorded_at: datetime
) -> dict[str, Any]:
    """The trail's row for one commit of ``table`` (as ``DeltaTable.history`` returns it)."""
    version = int(commit["version"])
    operation = str(commit.get("operation", ""))
    metrics = dict(commit.get("operationMetrics") or {})
    rows = _rows_affected(operation, metrics)
    reason = commit.get(delta.REASON_KEY) or commit.get(delta.REJECTED_BECAUSE_KEY)
    details = {
        "parameters": commit.get("operationParameters") or {},
        "metrics": metrics,
    }
    if delta.REJECTED_KEY in commit:
        details["rejected_version"] = commit[delta.REJECTED_KEY]
    if SUBJECT_KEY in commit:
        details["subject"] = commit[SUBJECT_KEY]
    return {
        "event_id": f"{table}@v{version}",
        "occurred_at": datetime.fromtimestamp(int(commit.get("timestamp", 0)) / 1000, UTC),
        "recorded_at": recorded_at,
        "environment": str(lake.environment),
        "action": _action(commit, operation, rows).value,
        "table": table,
        "asset_key": commit.get(delta.ASSET_KEY_KEY),
        "operation": operation,
        "version_before": version - 1 if version > 0 else None,
        "version_after": version,
        "rows_affected": rows,
        "run_id": commit.get(delta.RUN_ID_KEY),
        "principal": commit.get(delta.PRINCIPAL_KEY),
        "reason": reason,
        "details": json.dumps(details, sort_keys=True, default=str),
    }


def _target(lake: Lake) -> delta.WritableTable:
    uri = trail_uri(lake)
    lake.check_writable(uri)
    return delta.WritableTable(uri, lake.storage_options)


def _unrecorded(
    lake: Lake, snapshot: delta.Snapshot
) -> Iterator[tuple[str, DeltaTable, int | None]]:
    """Tables with commits the trail has not recorded: (name, table, last recorded)."""
    for name, dt in _own_tables(lake):
        done = snapshot.cursor(name)
        if done is None or dt.version() > done:
            yield name, dt, done


def pending(lake: Lake) -> dict[str, int]:
    """Tables with commits the trail has not recorded yet, and their newest version
    (reads logs, no data)."""
    snapshot = _target(lake).snapshot()
    return {name: dt.version() for name, dt, _ in _unrecorded(lake, snapshot)}


def record(lake: Lake, stamp: delta.Stamp) -> int:
    """Record every commit of every table not in the trail yet; returns the rows added.

    One append, carrying each table's new cursor: exactly once, whoever else records."""

    def attempt() -> int:
        snapshot = _target(lake).snapshot()
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        cursors: dict[str, int] = {}
        for name, dt, done in _unrecorded(lake, snapshot):
            latest = dt.version()
            first = 0 if done is None else done + 1
            commits = [c for c in dt.history(latest - first + 1) if int(c["version"]) >= first]
            rows += [commit_row(lake, name, c, now) for c in commits]
            cursors[delta.cursor_app(name)] = latest
        if not cursors:
            return 0
        rows.sort(key=lambda r: (r["occurred_at"], r["table"], r["version_after"]))
        snapshot.append(pl.DataFrame(rows, schema=SCHEMA), stamp, txns=cursors)
        return len(rows)

    return delta.retry_on_conflict(attempt, f"recording {AUDIT_TABLE}")


def record_event(
    lake: Lake,
    stamp: delta.Stamp,
    action: Action,
    subject: str,
    *,
    rows_affected: int | None = None,
    details: dict[str, Any] | None = None,
) -> str:
    """Record a change that is not a commit of a table (``subject``: what it changed, e.g.
    ``branches/pr-7``); returns the event's id."""
    now = datetime.now(UTC)
    event_id = f"{action.value}:{uuid.uuid4()}"
    row = {
        "event_id": event_id,
        "occurred_at": now,
        "recorded_at": now,
        "environment": str(lake.environment),
        "action": action.value,
        "table": subject,
        "asset_key": stamp.asset_key,
        "operation": action.value.upper(),
        "version_before": None,
        "version_after": None,
        "rows_affected": rows_affected,
        "run_id": stamp.run_id,
        "principal": stamp.principal,
        "reason": stamp.reason or None,
        "details": json.dumps(details or {}, sort_keys=True, default=str),
    }
    df = pl.DataFrame([row], schema=SCHEMA)
    delta.retry_on_conflict(
        lambda: _target(lake).snapshot().append(df, stamp), f"recording {action.value}"
    )
    return event_id


def read(lake: Lake, *, table: str | None = None, since: datetime | None = None) -> pl.DataFrame:
    """The trail (oldest first), optionally one table's rows, or those since a time."""
    if delta.open_table(trail_uri(lake), lake.storage_options) is None:
        return pl.DataFrame(schema=SCHEMA)
    df = delta.read(trail_uri(lake), lake.storage_options)
    if table is not None:
        df = df.filter(pl.col("table") == table)
    if since is not None:
        df = df.filter(pl.col("occurred_at") >= since)
    return df.sort("occurred_at", "table", "version_after", nulls_last=True)


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: problems make the trail's checks fail."""

    rows: int
    missing: list[str]
    """Table versions with no row in the trail."""
    not_append_only: list[str]
    """Commits of the trail itself that were not appends (rows may have been removed)."""
    outside: list[str]
    """Commits recorded as made outside the lakehouse."""

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def append_only(self) -> bool:
        return not self.not_append_only


def verify(lake: Lake, *, as_of: datetime | None = None) -> Verification:
    """Check the trail against every table's Delta history (commits after ``as_of`` are
    left to the next recording) and against its own log."""
    trail = read(lake)
    recorded = set(trail["event_id"].to_list())
    cutoff = None if as_of is None else int(as_of.timestamp() * 1000)
    missing: list[str] = []
    for name, dt in _own_tables(lake):
        history = {int(c["version"]): c for c in dt.history()}
        for version in range(dt.version() + 1):
            commit = history.get(version)
            if cutoff is not None and commit is not None and commit["timestamp"] > cutoff:
                continue
            if f"{name}@v{version}" in recorded:
                continue
            if commit is None:
                missing.append(
                    f"{name} v{version}: never recorded, and the Delta log no longer has it"
                )
            else:
                missing.append(f"{name} v{version} ({commit.get('operation')}): not recorded")
    not_append_only = []
    own = delta.open_table(trail_uri(lake), lake.storage_options)
    for commit in [] if own is None else own.history():
        mode = (commit.get("operationParameters") or {}).get("mode")
        if commit.get("operation") != "WRITE" or mode not in APPEND_MODES:
            not_append_only.append(
                f"{AUDIT_TABLE} v{commit['version']}: {commit.get('operation')} {mode or ''}".rstrip()
            )
    outside = [
        f"{r['table']} v{r['version_after']} ({r['operation']}, {r['occurred_at']:%Y-%m-%d %H:%M:%S})"
        for r in trail.filter(pl.col("action") == Action.OUTSIDE.value).iter_rows(named=True)
    ]
    return Verification(trail.height, missing, sorted(not_append_only), outside)


def format_trail(df: pl.DataFrame) -> str:
    """The trail as the CLI prints it: one line per change."""
    lines = [
        f"{'occurred (UTC)':<19}  {'environment':<12} {'action':<18} {'table':<28} "
        f"{'versions':>9} {'rows':>8}  principal / run / reason"
    ]
    for r in df.iter_rows(named=True):
        before, after = r["version_before"], r["version_after"]
        versions = "" if after is None else str(after) if before is None else f"{before}->{after}"
        rows = "" if r["rows_affected"] is None else str(r["rows_affected"])
        who = " / ".join(str(x) for x in (r["principal"], r["run_id"], r["reason"]) if x)
        lines.append(
            f"{r['occurred_at']:%Y-%m-%d %H:%M:%S}  {r['environment']:<12} {r['action']:<18} "
            f"{r['table']:<28} {versions:>9} {rows:>8}  {who}"
        )
    return "\n".join(lines)
