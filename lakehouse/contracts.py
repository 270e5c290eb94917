"""Soda v4 data contracts: one per table in ``soda_checks/<layer>/<table>.yml``.

A contract is verified in-process through DuckDB against one pinned Delta version of its
table (tables it references, for referential integrity, are registered beside it). The
Delta files are scanned lazily as an Arrow dataset, so nothing is copied. No Soda Cloud;
Soda's telemetry must be off before ``soda_core`` is imported, which ``_soda`` ensures.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import yaml
from deltalake.exceptions import DeltaError

from lakehouse import delta, duck
from lakehouse.settings import PROJECT_DIR
from lakehouse.storage import Lake, Layer

CONTRACTS_DIR = PROJECT_DIR / "soda_checks"
DATA_SOURCE = "duck"
NOW_VARIABLE = "NOW"
"""Contracts' freshness checks measure against this variable, set to the verification time."""
CONTRACT_LAYERS = (Layer.RAW, Layer.CLEANSED, Layer.MARTS)


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    WARN = "warn"
    NOT_EVALUATED = "not_evaluated"
    EXCLUDED = "excluded"


class Action(StrEnum):
    """What a violated rule does (``attributes: {action: ...}`` on a check), as DLT's
    expectations: ``warn`` publishes and flags, ``quarantine`` sets the offending rows
    aside and publishes the rest, ``fail`` stops the batch."""

    WARN = "warn"
    QUARANTINE = "quarantine"
    FAIL = "fail"


ROW_LEVEL_TYPES = frozenset({"missing", "invalid", "failed_rows"})
"""Check types that judge each row on its own: they default to quarantine."""


class VerificationError(RuntimeError):
    """Soda could not judge the data (an error, a check not evaluated): not a data failure."""


class ExitCode(IntEnum):
    """Soda's CLI exit codes, which ``lakehouse verify`` keeps."""

    OK = 0
    FAILED = 1
    WARNED = 2
    ERROR = 3


@dataclass(frozen=True)
class CheckRef:
    """One check of a contract, as the contract declares it."""

    type: str
    column: str | None = None
    qualifier: str | None = None
    description: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    layer: Layer | None = field(default=None, compare=False, hash=False)

    @property
    def name(self) -> str:
        """A stable identifier: ``[column__]type[__qualifier]`` (Dagster asset check name)."""
        return "__".join(p for p in (self.column, self.type, self.qualifier) if p)

    @property
    def row_level(self) -> bool:
        return self.type in ROW_LEVEL_TYPES

    @property
    def path(self) -> str:
        """Where the check sits in its contract, as Soda names it (its ``path`` selector)."""
        where = ["columns", self.column] if self.column else []
        return ".".join(
            [*where, "checks", self.type, *([self.qualifier] if self.qualifier else [])]
        )

    @property
    def key_columns(self) -> list[str]:
        """The columns a ``duplicate`` check keys on: its own column, or its ``columns``."""
        return [self.column] if self.column else [str(c) for c in self.body.get("columns") or []]

    @property
    def reference(self) -> tuple[Layer, str] | None:
        """The table a referential check looks values up in."""
        ref = self.body.get("valid_reference_data")
        return parse_dataset(ref["dataset"]) if ref else None

    @property
    def action(self) -> Action:
        """The declared action, else the default: raw only warns (it keeps everything),
        row-level rules quarantine, table-level rules fail."""
        declared = (self.body.get("attributes") or {}).get("action")
        if declared is not None:
            return Action(declared)
        if self.layer is Layer.RAW:
            return Action.WARN
        if self.layer is Layer.CLEANSED and self.row_level:
            return Action.QUARANTINE
        return Action.FAIL  # marts are rebuilt whole by dbt: there is no row to set aside

    @property
    def blocking(self) -> bool:
        """Whether a failure stops publication (everything but ``warn``)."""
        return self.action is not Action.WARN


@dataclass(frozen=True)
class Contract:
    layer: Layer
    table: str
    path: Path
    doc: Mapping[str, Any]

    @property
    def dataset(self) -> str:
        return str(self.doc["dataset"])

    @property
    def columns(self) -> dict[str, Mapping[str, Any]]:
        return {str(c["name"]): c for c in self.doc.get("columns") or []}

    @property
    def checks(self) -> list[CheckRef]:
        refs = [_check_ref(c, None, self.layer) for c in self.doc.get("checks") or []]
        for col in self.doc.get("columns") or []:
            refs += [_check_ref(c, str(col["name"]), self.layer) for c in col.get("checks") or []]
        return refs

    @property
    def references(self) -> set[tuple[Layer, str]]:
        """Tables named by ``valid_reference_data`` checks, which must be registered too."""
        out = set()
        for col in self.doc.get("columns") or []:
            for check in col.get("checks") or []:
                body = next(iter(check.values())) or {}
                ref = body.get("valid_reference_data")
                if ref:
                    out.add(parse_dataset(ref["dataset"]))
        return out

    def polars_schema(self) -> dict[str, pl.DataType]:
        """The contract's columns as polars types: what the cleansing step casts to."""
        return {name: polars_type(spec) for name, spec in self.columns.items()}


def _check_ref(check: Mapping[str, Any], column: str | None, layer: Layer | None) -> CheckRef:
    (kind, body) = next(iter(check.items()))
    body = body or {}
    return CheckRef(kind, column, body.get("qualifier"), body.get("name"), body, layer)


SAMPLE_ROWS = 5


def substitute_variables(text: str, now: datetime) -> str:
    """Resolve the one contract variable our expressions use, ``${var.NOW}``, as Soda does."""
    return text.replace("${var." + NOW_VARIABLE + "}", now.isoformat())


def failing_predicate(check: CheckRef, now: datetime) -> str | None:
    """A SQL condition true exactly for the rows that fail a row-level ``check`` (None for
    a table-level check, or one whose failing rows SQL cannot single out).

    The same condition gives the UI its failing-row samples and decides, before a batch is
    written, which rows a rule quarantines: what Soda counts is what gets set aside.
    """
    col, body = check.column, check.body
    if check.type == "missing" and col:
        return f'"{col}" IS NULL'
    if check.type == "failed_rows" and body.get("expression"):
        return f"({substitute_variables(str(body['expression']), now)})"
    if check.type == "invalid" and col:
        rules = []
        if "valid_min" in body:
            rules.append(f'"{col}" < {body["valid_min"]}')
        if "valid_max" in body:
            rules.append(f'"{col}" > {body["valid_max"]}')
        if "valid_values" in body:
            values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in body["valid_values"])
            rules.append(f'"{col}" NOT IN ({values})')
        if "valid_reference_data" in body:
            ref = body["valid_reference_data"]
            ref_layer, ref_table = parse_dataset(ref["dataset"])
            rules.append(
                # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
                f'"{col}" NOT IN (SELECT "{ref["column"]}" FROM {ref_layer}.{ref_table} '  # nosec B608
                f'WHERE "{ref["column"]}" IS NOT NULL)'
            )
        if rules:
            return f'("{col}" IS NOT NULL AND ({" OR ".join(rules)}))'
    return None


def failing_row_ids_query(check: CheckRef, view: str, row_id: str, now: datetime) -> str | None:
    """SQL selecting ``row_id`` of the rows of ``view`` that fail a row-level ``check``
    (None where ``failing_predicate`` is None): the rows ``failing_predicate`` selects.

    A check of references alone is an anti join instead. ``NOT IN (subquery)`` makes
    DuckDB build its hash table on the referenced table, for every batch judged (a chunk
    of a million items against ten million orders: twice the time); an anti join builds
    on the smaller side. With nulls left out on both sides the two select the same rows.
    """
    col, body = check.column, check.body
    ref = body.get("valid_reference_data")
    if check.type == "invalid" and col and ref and not (set(body) & _VALUE_RULES):
        ref_layer, ref_table = parse_dataset(ref["dataset"])
        # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
        return (
            f'SELECT __judged."{row_id}" FROM (SELECT "{row_id}", "{col}" FROM {view} '  # nosec B608
            f'WHERE "{col}" IS NOT NULL) AS __judged ANTI JOIN {ref_layer}.{ref_table} '
            f'AS __referenced ON __referenced."{ref["column"]}" = __judged."{col}"'
        )
    predicate = failing_predicate(check, now)
    # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
    return None if predicate is None else f"SELECT {row_id} FROM {view} WHERE {predicate}"  # nosec B608


_VALUE_RULES = frozenset({"valid_min", "valid_max", "valid_values"})
"""What an ``invalid`` check may judge besides references (``failing_predicate``)."""


def failing_rows_query(check: CheckRef, view: str, now: datetime | None = None) -> str | None:
    """SQL selecting the rows that fail ``check`` in ``view``, where the check type allows it.

    Soda v4 run locally reports counts, not the rows; this gives the UI a few examples.
    """
    if check.type == "duplicate":
        keys = check.key_columns
        if not keys:
            return None
        cols = ", ".join(f'"{k}"' for k in keys)
        # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
        dupes = f"SELECT {cols} FROM {view} GROUP BY ALL HAVING count(*) > 1"  # nosec B608
        # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
        return f"SELECT t.* FROM {view} t JOIN ({dupes}) d USING ({cols})"  # nosec B608
    predicate = failing_predicate(check, now or datetime.now(UTC))
    # identifiers from the repo's contracts (soda_checks/), not data (bandit B608)
    return None if predicate is None else f"SELECT * FROM {view} WHERE {predicate}"  # nosec B608


def parse_dataset(dataset: str) -> tuple[Layer, str]:
    source, layer, table = dataset.split("/")
    if source != DATA_SOURCE:
        raise ValueError(f"dataset {dataset!r}: data source must be {DATA_SOURCE!r}")
    return Layer(layer), table


_POLARS_TYPES: dict[str, pl.DataType] = {
    "varchar": pl.String(),
    "boolean": pl.Boolean(),
    "bigint": pl.Int64(),
    "date": pl.Date(),
    "timestamp with time zone": pl.Datetime("us", "UTC"),
}


def polars_type(spec: Mapping[str, Any]) -> pl.DataType:
    data_type = str(spec.get("data_type", "")).lower()
    if data_type == "decimal":
        return pl.Decimal(int(spec["numeric_precision"]), int(spec["numeric_scale"]))
    if data_type not in _POLARS_TYPES:
        raise ValueError(f"column {spec.get('name')!r}: unsupported data_type {data_type!r}")
    return _POLARS_TYPES[data_type]


def contract_path(layer: Layer | str, table: str) -> Path:
    return CONTRACTS_DIR / str(layer) / f"{table}.yml"


@cache
def load_contract(layer: Layer | str, table: str) -> Contract:
    path = contract_path(layer, table)
    doc = yaml.safe_load(path.read_text())
    contract = Contract(Layer(layer), table, path, doc)
    if parse_dataset(contract.dataset) != (Layer(layer), table):
        raise ValueError(f"{path}: dataset {contract.dataset!r} does not name {layer}/{table}")
    return contract


PII_ATTRIBUTE = "pii"
"""A column's ``attributes: {pii: true}`` in its contract: personal data."""


def pii_columns(layer: Layer | str, table: str) -> frozenset[str]:
    """The columns the contracts mark as personal data (``attributes: {pii: true}``).

    They are kept out of Delta's file statistics: the log's min/max values and null
    counts would otherwise copy them into ``_delta_log/`` and checkpoints, which outlive
    the rows (an erasure that rewrites the data leaves old log entries). A quarantine
    table holds its raw table's columns, so it takes raw's marks."""
    layer = Layer.RAW if Layer(layer) is Layer.QUARANTINE else Layer(layer)
    if layer not in CONTRACT_LAYERS or not contract_path(layer, table).exists():
        return frozenset()
    return frozenset(
        name
        for name, spec in load_contract(layer, table).columns.items()
        if (spec.get("attributes") or {}).get(PII_ATTRIBUTE) is True
    )


def all_contracts() -> list[Contract]:
    """The contract of every table the catalog says must have one; a table without its
    file is an error here (a new mart needs its contract), not a table left unchecked."""
    from lakehouse.catalog import contracted_tables

    missing = [t.path for t in contracted_tables() if not contract_path(t.layer, t.name).exists()]
    if missing:
        raise FileNotFoundError(
            f"no contract for {', '.join(missing)}: add soda_checks/<layer>/<table>.yml"
        )
    return [load_contract(t.layer, t.name) for t in contracted_tables()]


# -- verification -------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckOutcome:
    check: CheckRef
    outcome: Outcome
    diagnostics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    sample: list[dict[str, Any]] = field(default_factory=list)
    """A few failing rows (as text), for the checks whose failing rows SQL can select."""

    @property
    def failing_rows(self) -> int | None:
        """Rows that fail this check, from the diagnostic Soda reports for its type."""
        value = self.diagnostics.get(f"{self.check.type}_count")
        return None if value is None else int(value)


@dataclass(frozen=True)
class Verification:
    contract: Contract
    versions: dict[str, int]
    outcomes: list[CheckOutcome]
    log: str = ""
    scope: str = ""
    """What was read: empty for the whole version, else which rows (``incremental_checks``)."""

    @property
    def failed(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.outcome is Outcome.FAILED]

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        """Failures that stop publication: every failed check whose action is not ``warn``."""
        return [o for o in self.failed if o.check.blocking]

    @property
    def passed(self) -> bool:
        """Publishable: no blocking check failed (warnings are published and flagged)."""
        return not self.blocking_failures

    @property
    def exit_code(self) -> ExitCode:
        if any(o.outcome is Outcome.NOT_EVALUATED for o in self.outcomes) or not self.outcomes:
            return ExitCode.ERROR
        if self.failed:
            return ExitCode.FAILED
        if any(o.outcome is Outcome.WARN for o in self.outcomes):
            return ExitCode.WARNED
        return ExitCode.OK

    def report(self) -> str:
        lines = [
            f"{self.contract.layer}/{self.contract.table} "
            f"(versions {self.versions}): {self.exit_code.name}"
        ]
        for o in self.outcomes:
            rows = "" if o.failing_rows is None else f" ({o.failing_rows} failing rows)"
            action = f" [{o.check.action.value}]" if o.outcome is Outcome.FAILED else ""
            lines.append(f"  {o.outcome.value.upper():<13} {o.check.name}{action}{rows}")
            for row in o.sample:
                lines.append("      " + ", ".join(f"{k}={v}" for k, v in row.items()))
        return "\n".join(lines)


def _soda() -> Any:
    os.environ["SODA_CORE_TELEMETRY_ENABLED"] = "false"  # read when soda_core is imported
    import soda_core.contracts as contracts
    from soda_duckdb.common.data_sources.duckdb_data_source import DuckDBDataSourceImpl

    return contracts, DuckDBDataSourceImpl


def register(
    con: duckdb.DuckDBPyConnection, lake: Lake, layer: Layer, table: str, version: int
) -> None:
    """Expose one Delta table version as the view ``<layer>.<table>``: Soda's queries then
    read its Parquet files with DuckDB's own reader (an Arrow scan where DuckDB cannot
    reach them: ``delta.duckdb_view``)."""
    try:
        dt = lake.published_table(layer, table, version)
    except DeltaError as exc:
        raise FileNotFoundError(f"{layer}/{table} has no version {version}: {exc}") from exc
    if dt is None:
        raise FileNotFoundError(f"{layer}/{table} does not exist")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    delta.duckdb_view(con, f"{layer}.{table}", dt)


def _sample(
    con: duckdb.DuckDBPyConnection, check: CheckRef, view: str, now: datetime
) -> list[dict[str, Any]]:
    query = failing_rows_query(check, view, now)
    if query is None:
        return []
    try:
        return sample_rows(con, query)
    except duckdb.Error:
        return []  # e.g. a schema failure made the column disappear: counts still tell


def sample_rows(con: duckdb.DuckDBPyConnection, query: str) -> list[dict[str, Any]]:
    """The first ``SAMPLE_ROWS`` rows ``query`` selects, as text (how verdicts store them)."""
    rows = con.sql(f"{query} LIMIT {SAMPLE_ROWS}").pl()
    return [{k: None if v is None else str(v) for k, v in row.items()} for row in rows.to_dicts()]


def register_empty(con: duckdb.DuckDBPyConnection, contract: Contract) -> None:
    """An empty ``<layer>.<table>`` with the contract's columns, for a table not built yet."""
    columns = []
    for name, spec in contract.columns.items():
        data_type = str(spec["data_type"])
        if data_type == "decimal":
            data_type = f"decimal({spec['numeric_precision']}, {spec['numeric_scale']})"
        columns.append(f'"{name}" {data_type}')
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {contract.layer}")
    con.execute(f"CREATE OR REPLACE TABLE {contract.layer}.{contract.table} ({', '.join(columns)})")


def verify(
    lake: Lake,
    layer: Layer | str,
    table: str,
    version: int | None = None,
    *,
    reference_versions: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> Verification:
    """Verify ``<layer>/<table>`` at ``version`` (default: the published one) against its contract.

    Referenced tables are read at ``reference_versions[<layer>/<table>]`` when given,
    else at their published version; every version used is reported. Raises
    ``VerificationError`` when Soda cannot judge (never a data failure), and
    ``FileNotFoundError`` when there is no such table or version.
    """
    contract = load_contract(layer, table)
    with duck.session() as con:
        versions = register_inputs(con, lake, contract, version, reference_versions)
        return verify_registered(con, contract, versions, now=now)


def register_inputs(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    contract: Contract,
    version: int | None,
    reference_versions: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Register the contract's table at ``version`` and every table it references (see
    ``verify``); returns the version of each (-1: a referenced table not built yet)."""
    layer, table = contract.layer, contract.table
    versions: dict[str, int] = {}
    for ref_layer, ref_table in sorted({(layer, table), *contract.references}):
        key = f"{ref_layer}/{ref_table}"
        pinned = version if (ref_layer, ref_table) == (layer, table) else None
        if pinned is None:
            pinned = (reference_versions or {}).get(key)
        if pinned is None:
            pinned = lake.input_version(ref_layer, ref_table)
        if pinned is None and (ref_layer, ref_table) == (layer, table):
            raise FileNotFoundError(f"{key} has no published version: nothing to verify")
        if pinned is None:
            # A referenced table not built yet references nothing: its checks fail.
            register_empty(con, load_contract(ref_layer, ref_table))
            versions[key] = -1
            continue
        register(con, lake, ref_layer, ref_table, pinned)
        versions[key] = pinned
    return versions


def verify_registered(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    versions: Mapping[str, int],
    *,
    now: datetime | None = None,
    only: Collection[CheckRef] | None = None,
) -> Verification:
    """Run ``contract`` on a connection where ``<layer>.<table>`` and every table it references
    already exist (Delta versions registered, or a dbt build's own DuckDB tables); ``only``
    runs just those of its checks (Soda computes no metric for the others)."""
    now = now or datetime.now(UTC)
    contracts, duckdb_source = _soda()
    selectors = None
    if only is not None and not only:
        return Verification(contract, dict(versions), [])
    if only is not None:
        from soda_core.contracts.impl.check_selector import CheckSelector

        selectors = [CheckSelector("path", c.path, f"path={c.path}") for c in only]
    try:
        result = contracts.verify_contract_locally(
            data_sources=[duckdb_source.from_existing_cursor(con, name=DATA_SOURCE)],
            contract_file_path=str(contract.path),
            variables={NOW_VARIABLE: now.isoformat()},
            check_selectors=selectors,
        )
    except Exception as exc:  # Soda's own failures come in many types; none is a data verdict
        raise VerificationError(
            f"{contract.layer}/{contract.table}: Soda could not run the contract: {exc}"
        ) from exc
    if result.has_errors:
        raise VerificationError(
            f"{contract.layer}/{contract.table}: Soda reported errors: {result.get_errors_str()}"
        )
    declared = {c.name: c for c in contract.checks}
    wanted = {c.name for c in only or ()}
    outcomes = []
    view = f"{contract.layer}.{contract.table}"
    for cvr in result.contract_verification_results:
        for r in cvr.check_results:
            ref = CheckRef(
                r.check.type,
                r.check.column_name,
                getattr(r.check, "qualifier", None),
                layer=contract.layer,
            )
            if only is not None and ref.name not in wanted:
                continue  # reported as excluded: the caller judges it elsewhere
            check = declared.get(ref.name, ref)
            outcome = Outcome(r.outcome.name.lower())
            if outcome is Outcome.NOT_EVALUATED:
                raise VerificationError(
                    f"{view}: check {check.name} was not evaluated: the data could not be judged"
                )
            sample = _sample(con, check, view, now) if outcome is Outcome.FAILED else []
            outcomes.append(
                CheckOutcome(
                    check=check,
                    outcome=outcome,
                    diagnostics=dict(r.diagnostic_metric_values or {}),
                    summary=str(getattr(r.check, "name", "") or ""),
                    sample=sample,
                )
            )
    logs = result.get_logs_str() if hasattr(result, "get_logs_str") else ""
    return Verification(contract, dict(versions), outcomes, logs)


def validate_contract(contract: Contract) -> list[str]:
    """Problems with a contract itself, found without any data (CI runs this on every PR).

    Its column types must be ones cleansing can cast to, every referenced table must have
    a contract, and Soda must evaluate every declared check against an empty table of
    the contract's own columns (a misspelt check type or column is not evaluated).
    """
    where = f"{contract.layer}/{contract.table}"
    try:
        contract.polars_schema()
        refs = [load_contract(layer, table) for layer, table in contract.references]
    except (ValueError, KeyError, FileNotFoundError) as exc:
        return [f"{where}: {exc}"]
    with duck.session() as con:
        try:
            for ref in {(c.layer, c.table): c for c in (contract, *refs)}.values():
                register_empty(con, ref)
            contracts, duckdb_source = _soda()
            result = contracts.verify_contract_locally(
                data_sources=[duckdb_source.from_existing_cursor(con, name=DATA_SOURCE)],
                contract_file_path=str(contract.path),
                variables={NOW_VARIABLE: datetime.now(UTC).isoformat()},
            )
        except Exception as exc:  # Soda's own parse errors come in many types
            return [f"{where}: Soda cannot run it: {exc}"]
    problems = []
    if result.has_errors:
        problems.append(f"{where}: Soda reported errors: {result.get_errors_str()}")
    evaluated = [r for cvr in result.contract_verification_results for r in cvr.check_results]
    if len(evaluated) != len(contract.checks):
        problems.append(
            f"{where}: {len(contract.checks)} checks declared, Soda evaluated {len(evaluated)}"
        )
    for r in evaluated:
        if r.outcome.name == "NOT_EVALUATED":
            problems.append(f"{where}: check {r.check.type} on {r.check.column_name} not evaluated")
        if r.check.type == "schema" and r.outcome.name != "PASSED":
            problems.append(f"{where}: its schema check fails on its own columns")
    return problems + _action_problems(contract)


def _action_problems(contract: Contract) -> list[str]:
    """A check's action must be known, and ``quarantine`` must be one we can carry out:
    a row-level rule of a cleansed table whose failing rows SQL can single out."""
    where = f"{contract.layer}/{contract.table}"
    problems = []
    for check in contract.checks:
        try:
            action = check.action
        except ValueError:
            declared = (check.body.get("attributes") or {}).get("action")
            problems.append(
                f"{where}: check {check.name}: unknown action {declared!r} "
                f"(use {', '.join(a.value for a in Action)})"
            )
            continue
        if action is Action.QUARANTINE and (
            contract.layer is not Layer.CLEANSED
            or failing_predicate(check, datetime.now(UTC)) is None
        ):
            problems.append(
                f"{where}: check {check.name} cannot quarantine: only row-level rules of "
                "cleansed tables whose failing rows can be selected can"
            )
    return problems
