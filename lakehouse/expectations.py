"""Expectations: a contract's row-level rules, judged on a batch before it is written.

Each check of a cleansed contract declares what a violation does (``attributes: {action:
...}``; see ``contracts.Action``): ``warn`` publishes the row and counts it, ``quarantine``
sets the row aside in ``quarantine/<table>`` with the rule and the reason while the other
rows publish, ``fail`` stops the whole batch. Rules are judged with SQL that selects
exactly a check's failing rows (``contracts.failing_row_ids_query``), so what is set aside
here is exactly what the contract would count after the write.

References are judged against the published versions of the tables they name; a row that
fails only because its reference has not arrived yet (a late customer, store, product or
order) is *held*: it is judged again on every run and released once the reference exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl
from deltalake import DeltaTable

from lakehouse import delta, duck
from lakehouse.contracts import (
    Action,
    CheckRef,
    Contract,
    failing_row_ids_query,
    load_contract,
    register_empty,
)
from lakehouse.incremental_checks import narrow_references
from lakehouse.storage import Lake

ROW_ID = "__row"
RULES = "__rules"
REASONS = "__reasons"
HELD_FOR = "__held_for"
SAMPLE_ROWS = 5


@dataclass(frozen=True)
class Rule:
    check: CheckRef
    query: str
    """Selects the ``ROW_ID`` of the failing rows of the batch, a view under the contract's
    own name (``batch_view``)."""

    @property
    def name(self) -> str:
        return self.check.name

    @property
    def action(self) -> Action:
        return self.check.action

    def describe(self) -> str:
        return self.check.description or self.check.name


def batch_view(contract: Contract) -> str:
    """The batch being judged, as its rules name it: under the table's own name."""
    return f"{contract.layer}.{contract.table}"


def row_rules(contract: Contract, now: datetime) -> list[Rule]:
    """The contract's checks that can judge one row at a time, in declaration order."""
    rules, view = [], batch_view(contract)
    for check in contract.checks:
        query = failing_row_ids_query(check, view, ROW_ID, now) if check.row_level else None
        if query is not None:
            rules.append(Rule(check, query))
    return rules


@dataclass(frozen=True)
class Violation:
    """Rows of a batch that break one rule, with a few of them for the operator."""

    rule: str
    action: Action
    rows: int
    sample: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Judgement:
    passed: pl.DataFrame
    """Rows to publish (rules with action ``warn`` included), in the batch's columns."""
    quarantined: pl.DataFrame
    """Rows to set aside: the batch's columns plus ``__rules`` (the rules broken),
    ``__reasons`` (what each says, with the offending value) and ``__held_for`` (the
    tables awaited, when only missing references keep the row out; else null)."""
    violations: list[Violation]
    reference_versions: dict[str, int]
    """The published version of every referenced table the rules read (-1: none yet)."""

    def of(self, action: Action) -> list[Violation]:
        return [v for v in self.violations if v.action is action]


def _register_references(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    rules: list[Rule],
    pinned: Mapping[str, int],
    opened: dict[tuple[str, str], DeltaTable] | None = None,
) -> dict[str, int]:
    """Register every table the rules reference, at its pinned (default: published)
    version; ``opened`` collects the versions opened."""
    versions: dict[str, int] = {}
    for layer, table in sorted({r.check.reference for r in rules if r.check.reference}):
        key = f"{layer}/{table}"
        version = pinned.get(key, lake.input_version(layer, table))
        dt = None if version is None or version < 0 else lake.published_table(layer, table, version)
        if dt is None:
            register_empty(con, load_contract(layer, table))
            versions[key] = -1
            continue
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        # DuckDB's own Parquet reader where it can (only the referenced column is read)
        delta.duckdb_view(con, f"{layer}.{table}", dt)
        versions[key] = int(dt.version())
        if opened is not None:
            opened[(str(layer), table)] = dt
    return versions


def _reason(rule: Rule, row: dict[str, Any]) -> str:
    column = rule.check.column
    if column and column in row:
        return f"{rule.describe()} ({column}={row[column]!r})"
    return rule.describe()


SMALL_BATCH_ROWS = 100_000
"""A first batch this small (an increment's) reads, of each table its rules reference, only
the files whose key hashes hold one of its values (``lakehouse.key_index``)."""


class RowJudge:
    """Judges batches by a contract's row rules on one DuckDB connection, every batch
    against the same versions of the referenced tables. A small first batch reads only
    the referenced files that may hold its values. From the second batch on (a large
    load judged a chunk at a time) the referenced columns are held in memory, read once,
    instead of from the tables' files for every chunk."""

    def __init__(
        self,
        lake: Lake,
        contract: Contract,
        now: datetime,
        reference_versions: Mapping[str, int] | None = None,
    ) -> None:
        self.contract = contract
        self.rules = row_rules(contract, now)
        self.lake = lake
        self._session = ExitStack()
        self.con = self._session.enter_context(duck.session())
        self._batches = 0
        self._tables: dict[tuple[str, str], DeltaTable] = {}
        self._narrowed: list[tuple[str, DeltaTable]] = []
        try:
            self.versions = _register_references(
                self.con, lake, self.rules, reference_versions or {}, self._tables
            )
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {contract.layer}")
        except BaseException:
            self._session.close()
            raise

    def __enter__(self) -> RowJudge:
        return self

    def __exit__(self, *_: object) -> None:
        self._session.close()

    def _widen_references(self) -> None:
        """Every file of the referenced tables again (for the batches after a small one)."""
        for view, dt in self._narrowed:
            delta.duckdb_view(self.con, view, dt)
        self._narrowed.clear()

    def _hold_references(self) -> None:
        """Copy the referenced columns into DuckDB once (see the class)."""
        columns: dict[tuple[str, str], set[str]] = {}
        for rule in self.rules:
            if rule.check.reference is not None:
                column = rule.check.body["valid_reference_data"]["column"]
                columns.setdefault(rule.check.reference, set()).add(f'"{column}"')
        for (layer, table), cols in sorted(columns.items()):
            if self.versions.get(f"{layer}/{table}", -1) < 0:
                continue  # an empty stand-in: nothing to read
            held = f"__held__{layer}__{table}"
            # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
            self.con.execute(
                f"CREATE TEMP TABLE {held} AS SELECT {', '.join(sorted(cols))} "  # nosec B608
                f"FROM {layer}.{table}"
            )
            self.con.execute(f"CREATE OR REPLACE VIEW {layer}.{table} AS SELECT * FROM {held}")  # nosec B608

    def judge(self, batch: pl.DataFrame, describe_row: Any = None) -> Judgement:
        """Split ``batch`` (typed rows in the contract's columns) by the row rules.
        ``describe_row(row) -> str`` names a row for the operator (file and row number)."""
        self._batches += 1
        if self._batches == 2:
            self._widen_references()
            self._hold_references()
        con, contract = self.con, self.contract
        numbered = batch.with_row_index(ROW_ID)
        broken: dict[int, list[Rule]] = {}
        violations: list[Violation] = []
        # Arrow string views: DuckDB reads the batch where polars holds it, without a copy.
        con.register("__batch", numbered.to_arrow(compat_level=pl.CompatLevel.newest()))
        view = batch_view(contract)
        # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM __batch")  # nosec B608
        if self._batches == 1 and batch.height <= SMALL_BATCH_ROWS:
            checks = [r.check for r in self.rules if r.check.column in batch.columns]
            self._narrowed = narrow_references(
                con, view, checks, lambda *table: self._tables.get(table), self.lake.key_index()
            )
        for rule in self.rules:
            ids = [r[0] for r in con.execute(rule.query).fetchall()]
            if not ids:
                continue
            for i in ids:
                broken.setdefault(int(i), []).append(rule)
            sample = []
            if describe_row is not None:
                rows = numbered.filter(pl.col(ROW_ID).is_in(ids[:SAMPLE_ROWS]))
                sample = [describe_row(r) for r in rows.iter_rows(named=True)]
            violations.append(Violation(rule.name, rule.action, len(ids), sample))
        con.execute(f"DROP VIEW {view}")
        con.unregister("__batch")
        return _split(numbered, broken, violations, self.versions)


def judge(
    lake: Lake,
    contract: Contract,
    batch: pl.DataFrame,
    now: datetime,
    describe_row: Any = None,
    *,
    reference_versions: Mapping[str, int] | None = None,
) -> Judgement:
    """Split one ``batch`` by the contract's row rules (see ``RowJudge``);
    ``reference_versions`` pins referenced tables (default: their published versions)."""
    with RowJudge(lake, contract, now, reference_versions) as judging:
        return judging.judge(batch, describe_row)


def _split(
    numbered: pl.DataFrame,
    broken: dict[int, list[Rule]],
    violations: list[Violation],
    versions: dict[str, int],
) -> Judgement:
    aside = {
        i: [r for r in rs if r.action is not Action.WARN]
        for i, rs in broken.items()
        if any(r.action is not Action.WARN for r in rs)
    }
    aside_ids = pl.Series(ROW_ID, list(aside), dtype=pl.UInt32)
    picked = numbered.filter(pl.col(ROW_ID).is_in(aside_ids))
    rules_col, reasons_col, held_col = [], [], []
    for row in picked.iter_rows(named=True):
        rs = aside[row[ROW_ID]]
        rules_col.append(", ".join(r.name for r in rs))
        reasons_col.append("; ".join(_reason(r, row) for r in rs))
        awaited = sorted({"/".join(map(str, r.check.reference)) for r in rs if r.check.reference})
        held_col.append(", ".join(awaited) if all(r.check.reference for r in rs) else None)
    quarantined = picked.with_columns(
        pl.Series(RULES, rules_col, dtype=pl.String),
        pl.Series(REASONS, reasons_col, dtype=pl.String),
        pl.Series(HELD_FOR, held_col, dtype=pl.String),
    ).drop(ROW_ID)
    passed = numbered.filter(~pl.col(ROW_ID).is_in(aside_ids)).drop(ROW_ID)
    return Judgement(passed, quarantined, violations, versions)
