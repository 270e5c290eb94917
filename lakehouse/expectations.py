"""Expectations: a contract's row-level rules, judged on a batch before it is written.

Each check of a cleansed contract declares what a violation does (``attributes: {action:
...}``; see ``contracts.Action``): ``warn`` publishes the row and counts it, ``quarantine``
sets the row aside in ``quarantine/<table>`` with the rule and the reason while the other
rows publish, ``fail`` stops the whole batch. Rules are judged with the very SQL condition
that selects a check's failing rows (``contracts.failing_predicate``), so what is set
aside here is exactly what the contract would count after the write.

References are judged against the published versions of the tables they name; a row that
fails only because its reference has not arrived yet (a late customer, store, product or
order) is *held*: it is judged again on every run and released once the reference exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from lakehouse.contracts import (
    Action,
    CheckRef,
    Contract,
    failing_predicate,
    load_contract,
    register_empty,
)
from lakehouse.storage import Lake

ROW_ID = "__row"
RULES = "__rules"
REASONS = "__reasons"
HELD_FOR = "__held_for"
SAMPLE_ROWS = 5


@dataclass(frozen=True)
class Rule:
    check: CheckRef
    predicate: str

    @property
    def name(self) -> str:
        return self.check.name

    @property
    def action(self) -> Action:
        return self.check.action

    def describe(self) -> str:
        return self.check.description or self.check.name


def row_rules(contract: Contract, now: datetime) -> list[Rule]:
    """The contract's checks that can judge one row at a time, in declaration order."""
    rules = []
    for check in contract.checks:
        predicate = failing_predicate(check, now) if check.row_level else None
        if predicate is not None:
            rules.append(Rule(check, predicate))
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
    con: duckdb.DuckDBPyConnection, lake: Lake, rules: list[Rule], pinned: Mapping[str, int]
) -> dict[str, int]:
    versions: dict[str, int] = {}
    for layer, table in sorted({r.check.reference for r in rules if r.check.reference}):
        key = f"{layer}/{table}"
        version = pinned.get(key, lake.input_version(layer, table))
        dt = None if version is None or version < 0 else lake.published_table(layer, table, version)
        if dt is None:
            register_empty(con, load_contract(layer, table))
            versions[key] = -1
            continue
        con.register(f"__ref__{layer}__{table}", dt.to_pyarrow_dataset())
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        con.execute(
            # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
            f"CREATE OR REPLACE VIEW {layer}.{table} AS SELECT * FROM __ref__{layer}__{table}"  # nosec B608
        )
        versions[key] = int(dt.version())
    return versions


def _reason(rule: Rule, row: dict[str, Any]) -> str:
    column = rule.check.column
    if column and column in row:
        return f"{rule.describe()} ({column}={row[column]!r})"
    return rule.describe()


def judge(
    lake: Lake,
    contract: Contract,
    batch: pl.DataFrame,
    now: datetime,
    describe_row: Any = None,
    *,
    reference_versions: Mapping[str, int] | None = None,
) -> Judgement:
    """Split ``batch`` (typed rows in the contract's columns) by the contract's row rules.

    ``describe_row(row) -> str`` names a row for the operator (file and row number);
    ``reference_versions`` pins referenced tables (default: their published versions).
    """
    rules = row_rules(contract, now)
    numbered = batch.with_row_index(ROW_ID)
    broken: dict[int, list[Rule]] = {}
    violations: list[Violation] = []
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        versions = _register_references(con, lake, rules, reference_versions or {})
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {contract.layer}")
        con.register("__batch", numbered.to_arrow())
        view = f"{contract.layer}.{contract.table}"
        # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM __batch")  # nosec B608
        for rule in rules:
            ids = [
                r[0]
                for r in con.execute(
                    # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
                    f"SELECT {ROW_ID} FROM {view} WHERE {rule.predicate}"  # nosec B608
                ).fetchall()
            ]
            if not ids:
                continue
            for i in ids:
                broken.setdefault(int(i), []).append(rule)
            sample = []
            if describe_row is not None:
                rows = numbered.filter(pl.col(ROW_ID).is_in(ids[:SAMPLE_ROWS]))
                sample = [describe_row(r) for r in rows.iter_rows(named=True)]
            violations.append(Violation(rule.name, rule.action, len(ids), sample))
    finally:
        con.close()

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
