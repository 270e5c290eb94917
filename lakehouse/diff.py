"""What a branch does to the marts: each mart it rebuilt, compared with prod's pinned version.

The comparison runs in DuckDB over both Delta versions (read in place, nothing copied
to the lake) and is keyed by the column (or expression) dbt's ``unique`` test declares
for the model. The report is Markdown, written to be posted as a pull request comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from lakehouse import delta, duck
from lakehouse.marts import mart_keys
from lakehouse.storage import Lake, Layer

EXAMPLES = 3
"""Changed rows shown per changed column."""


@dataclass(frozen=True)
class ColumnChange:
    column: str
    rows: int
    examples: list[tuple[str, str | None, str | None]]
    """(key, prod value, branch value)."""


@dataclass
class MartDiff:
    model: str
    status: str
    """``rebuilt``, ``new`` (not in prod), or ``not rebuilt`` (the branch reads prod's)."""
    prod_version: int | None = None
    branch_version: int | None = None
    prod_rows: int = 0
    branch_rows: int = 0
    key: str | None = None
    columns_added: list[tuple[str, str]] = field(default_factory=list)
    columns_removed: list[tuple[str, str]] = field(default_factory=list)
    type_changes: list[tuple[str, str, str]] = field(default_factory=list)
    rows_added: int = 0
    rows_removed: int = 0
    rows_changed: int | None = 0
    """None when rows cannot be matched by key (no key, or a duplicated one)."""
    column_changes: list[ColumnChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.status == "new"
            or self.columns_added
            or self.columns_removed
            or self.type_changes
            or self.rows_added
            or self.rows_removed
            or self.rows_changed
        )


@dataclass
class DiffReport:
    branch: str
    prod_root: str
    pinned_at: str
    marts: list[MartDiff]

    def markdown(self) -> str:
        rebuilt = [m for m in self.marts if m.status != "not rebuilt"]
        changed = [m for m in rebuilt if m.changed]
        lines = [
            f"## Data diff: `{self.branch}` vs prod",
            "",
            f"Prod is `{self.prod_root}` at the Delta versions pinned {self.pinned_at}. "
            f"{len(rebuilt)} of {len(self.marts)} marts rebuilt in this branch, "
            f"{len(changed)} with differences.",
            "",
            "| mart | prod rows | branch rows | added | removed | changed | schema |",
            "|---|--:|--:|--:|--:|--:|---|",
        ]
        for m in self.marts:
            if m.status == "not rebuilt":
                lines.append(f"| {m.model} | {m.prod_rows:,} | — | — | — | — | not rebuilt |")
                continue
            changed_rows = "n/a" if m.rows_changed is None else f"{m.rows_changed:,}"
            lines.append(
                f"| {m.model} | {_version(m.prod_rows, m.prod_version)} | "
                f"{_version(m.branch_rows, m.branch_version)} | {m.rows_added:,} | "
                f"{m.rows_removed:,} | {changed_rows} | {_schema_cell(m)} |"
            )
        for m in changed:
            lines += ["", f"### {m.model}", ""]
            if m.key:
                lines.append(f"Rows matched by `{m.key}`.")
            for name, dtype in m.columns_added:
                lines.append(f"- column added: `{name}` ({dtype})")
            for name, dtype in m.columns_removed:
                lines.append(f"- column removed: `{name}` ({dtype})")
            for name, old, new in m.type_changes:
                lines.append(f"- type changed: `{name}` {old} → {new}")
            lines += [f"- {note}" for note in m.notes]
            if m.column_changes:
                lines += [
                    "",
                    "| column | rows changed | examples (key: prod → branch) |",
                    "|---|--:|---|",
                ]
                for c in m.column_changes:
                    examples = "; ".join(
                        f"`{_cell(k)}`: {_cell(a)} → {_cell(b)}" for k, a, b in c.examples
                    )
                    lines.append(f"| `{c.column}` | {c.rows:,} | {examples} |")
        return "\n".join(lines) + "\n"


def _version(rows: int, version: int | None) -> str:
    return f"{rows:,}" if version is None else f"{rows:,} (v{version})"


def _schema_cell(m: MartDiff) -> str:
    parts = [f"+{n}" for n, _ in m.columns_added] + [f"-{n}" for n, _ in m.columns_removed]
    parts += [f"~{n}" for n, _, _ in m.type_changes]
    return ", ".join(parts) if parts else "same"


def _cell(value: str | None) -> str:
    if value is None:
        return "NULL"
    value = value if len(value) <= 40 else value[:37] + "..."
    return value.replace("|", "\\|").replace("\n", " ")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE {view}").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def diff_mart(
    con: duckdb.DuckDBPyConnection, model: str, key: str | None, prod: Any, branch: Any
) -> MartDiff:
    """Compare two registered Arrow datasets (prod and branch versions of one mart)."""
    con.register("prod_data", prod)
    con.register("branch_data", branch)
    result = MartDiff(model, "rebuilt", key=key)
    p_cols, b_cols = _columns(con, "prod_data"), _columns(con, "branch_data")
    result.columns_added = [(c, t) for c, t in b_cols.items() if c not in p_cols]
    result.columns_removed = [(c, t) for c, t in p_cols.items() if c not in b_cols]
    result.type_changes = [
        (c, p_cols[c], b_cols[c]) for c in p_cols if c in b_cols and p_cols[c] != b_cols[c]
    ]
    common = [c for c in p_cols if c in b_cols]
    result.prod_rows = _scalar(con, "SELECT count(*) FROM prod_data")
    result.branch_rows = _scalar(con, "SELECT count(*) FROM branch_data")

    def as_compared(column: str) -> str:
        # Values of a column whose type changed are compared as text.
        return f"CAST({_q(column)} AS VARCHAR)" if p_cols[column] != b_cols[column] else _q(column)

    keyed = key is not None
    if keyed:
        try:
            for side in ("prod", "branch"):
                con.execute(
                    # identifiers from the dbt manifest and table schemas, not data (bandit B608)
                    f"CREATE OR REPLACE TEMP VIEW {side}_keyed AS SELECT CAST(({key}) AS VARCHAR) "  # nosec B608
                    f"AS __key, {', '.join(f'{as_compared(c)} AS {_q(c)}' for c in common)} "
                    f"FROM {side}_data"
                ).fetchall()
            dupes = _scalar(
                con,
                "SELECT (SELECT count(*) - count(DISTINCT __key) FROM prod_keyed) + "
                "(SELECT count(*) - count(DISTINCT __key) FROM branch_keyed)",
            )
        except duckdb.Error as exc:
            result.notes.append(f"key `{key}` cannot be evaluated on both sides ({exc})")
            keyed = False
        else:
            if dupes:
                result.notes.append(f"key `{key}` is not unique: rows compared as whole rows")
                keyed = False
    if not keyed:
        cols = ", ".join(as_compared(c) for c in common)
        result.rows_added = _scalar(
            con,
            # identifiers from the dbt manifest and table schemas, not data (bandit B608)
            f"SELECT count(*) FROM (SELECT {cols} FROM branch_data EXCEPT ALL SELECT {cols} FROM prod_data)",  # nosec B608
        )
        result.rows_removed = _scalar(
            con,
            # identifiers from the dbt manifest and table schemas, not data (bandit B608)
            f"SELECT count(*) FROM (SELECT {cols} FROM prod_data EXCEPT ALL SELECT {cols} FROM branch_data)",  # nosec B608
        )
        result.rows_changed = None
        return result

    result.rows_added = _scalar(
        con, "SELECT count(*) FROM branch_keyed ANTI JOIN prod_keyed USING (__key)"
    )
    result.rows_removed = _scalar(
        con, "SELECT count(*) FROM prod_keyed ANTI JOIN branch_keyed USING (__key)"
    )
    differs = {c: f"p.{_q(c)} IS DISTINCT FROM b.{_q(c)}" for c in common}
    joined = "FROM prod_keyed p JOIN branch_keyed b USING (__key)"
    if not differs:
        return result
    (counts,) = con.execute(
        f"SELECT count(*) FILTER (WHERE {' OR '.join(differs.values())}), "
        + ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in differs.values())
        + f" {joined}"
    ).fetchall()
    result.rows_changed = int(counts[0])
    for column, n in zip(common, counts[1:], strict=True):
        if not n:
            continue
        examples = con.execute(
            f"SELECT __key, CAST(p.{_q(column)} AS VARCHAR), CAST(b.{_q(column)} AS VARCHAR) "
            f"{joined} WHERE {differs[column]} ORDER BY __key LIMIT {EXAMPLES}"
        ).fetchall()
        result.column_changes.append(
            ColumnChange(column, int(n), [(str(k), a, b) for k, a, b in examples])
        )
    return result


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    (row,) = con.execute(sql).fetchall()  # read fully: DuckDB 2 keeps one open result
    return int(row[0])


def diff_branch(lake: Lake, manifest_path: Path) -> DiffReport:
    """Every mart: the branch's own table (if it rebuilt it) against prod's pinned version."""
    if not lake.is_branch:
        raise ValueError(f"{lake} is not a branch: nothing to compare with prod")
    pins = lake.pins
    keys = mart_keys(manifest_path)
    models = sorted(
        set(keys)
        | {t.split("/", 1)[1] for t in pins.tables if t.startswith(f"{Layer.MARTS.value}/")}
    )
    marts = []
    with duck.session() as con:
        for model in models:
            prod_version = pins.tables.get(f"{Layer.MARTS.value}/{model}")
            prod = (
                None
                if prod_version is None
                else delta.open_table(
                    lake.prod_uri(Layer.MARTS.value, model), lake.storage_options, prod_version
                )
            )
            own = delta.open_table(lake.table_uri(Layer.MARTS, model), lake.storage_options)
            branch = None if own is None else lake.published_table(Layer.MARTS, model)
            if branch is None:
                if prod is not None:
                    marts.append(
                        MartDiff(
                            model, "not rebuilt", prod_version, prod_rows=delta.row_count(prod)
                        )
                    )
                continue
            if prod is None:
                marts.append(
                    MartDiff(
                        model,
                        "new",
                        branch_version=branch.version(),
                        branch_rows=delta.row_count(branch),
                        rows_added=delta.row_count(branch),
                        rows_changed=None,
                        notes=["not in prod: every row is new"],
                    )
                )
                continue
            result = diff_mart(
                con, model, keys.get(model), prod.to_pyarrow_dataset(), branch.to_pyarrow_dataset()
            )
            result.prod_version, result.branch_version = prod_version, branch.version()
            marts.append(result)
    return DiffReport(
        branch=lake.environment.branch or "",
        prod_root=lake.prod_root,
        pinned_at=f"{pins.pinned_at:%Y-%m-%d %H:%M} UTC",
        marts=marts,
    )
