"""Cleansed -> marts: dbt builds in a scratch DuckDB, the lake gets Delta tables.

dbt reads the cleansed tables at their published Delta versions, as views in the DuckDB
file's ``cleansed`` schema over those versions' Parquet files (copied in where DuckDB
cannot read them in place: S3), so a whole dbt run sees one consistent snapshot. Each model
it builds is judged by its contract right there, in the scratch database (write-audit-
publish with the audit before the write), and only a model that passes is written to
marts/<model>: one Delta commit (readers see the old table or the new one, never half)
that records the cleansed versions it was built from and marks itself published. The
DuckDB file is working space: delete it and the next run rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import yaml
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.dbt_prepared import DBT_PROJECT_DIR, MANIFEST, dbt_executable
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer, save_cache_file

if TYPE_CHECKING:
    from lakehouse.increments import SliceChanges

DBT_MANIFEST = MANIFEST
DBT_PROFILE = "jaffle_lakehouse"
MARTS_SCHEMA = "marts"
MART_CLUSTERS: dict[str, str] = {"orders": "ordered_at", "order_items": "ordered_at"}
"""The column a mart's rows are sorted by when it is written whole, so each data file
holds a span of time: an increment's MERGE reads and rewrites only the files whose span
holds a row it changes (recent ones, as a rule), not every file of the table."""
CLUSTERED_FILE_SIZE = 32 * 1024 * 1024
"""Bytes per data file of a sorted mart: spans short enough that a day's changes touch
a small part of a large table, files large enough to read efficiently."""
MART_INPUTS_KEY = "lakehouse_mart_inputs"
"""Commit-info key recording the cleansed versions and dbt code a mart was built from."""


CLEANSED_SCHEMA = "cleansed"
PUBLISHED_SCHEMA = "lakehouse_published"
"""In an incremental build, each keyed mart as published: a view over its files (on S3,
a copy). Lineage through it is lineage from the mart itself."""
CHANGES_SCHEMA = "lakehouse_changes"
"""In an incremental build, what to rebuild (``lakehouse.increments``), and the rows of
large cleansed tables it reads, as ``cleansed_<table>``: lineage through those is
lineage from the cleansed table."""
NARROWED = "cleansed_"


def copy_in(con: duckdb.DuckDBPyConnection, table: str, data: Any) -> None:
    con.register("incoming", data)
    # identifiers from the dbt manifest and lakehouse.sources, not data (bandit B608)
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")  # nosec B608
    con.unregister("incoming")


def drop_relation(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> None:
    """Drop ``schema.name``, a view or a table (DuckDB refuses to drop one as the other)."""
    kinds = con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} {schema}.{name}")


def _profiles() -> dict[str, Any]:
    """The project's dbt profiles, as the file says now."""
    return dict(yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text()))


def scratch_settings(target: str) -> dict[str, str]:
    """The DuckDB settings of the dbt profile's ``target`` (``dbt/profiles.yml``): dbt's
    connection to the scratch database and the lakehouse's own (loading, judging,
    exporting) run with the same time zone, memory limit and compression."""
    output = _profiles()[DBT_PROFILE]["outputs"][target]
    return {str(k): str(v) for k, v in (output.get("settings") or {}).items()}


@dataclass(frozen=True)
class MartWorkspace:
    """One run's dbt scratch space over a lake: a DuckDB file, a profile pointing at it,
    dbt's target directory and prod's dbt state (in a branch).

    The space is the run's alone: concurrent runs never share a DuckDB file (which one
    writer locks) or a target directory, and nothing a run leaves behind can stand in for
    the lake, so a fresh container builds exactly what a warm one does. ``discard``
    removes it afterwards.
    """

    lake: Lake
    run_id: str

    @property
    def directory(self) -> Path:
        slug = hashlib.sha256(self.lake.root.encode()).hexdigest()[:12]
        return Path(self.lake.settings.work_dir) / f"dbt-{slug}" / "runs" / self.run_id

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def duckdb_path(self) -> Path:
        return self.directory / "lakehouse.duckdb"

    @property
    def profiles_dir(self) -> Path:
        return self.directory / "profiles"

    def write_profile(self) -> Path:
        """The project's dbt profile, pointed at this lake's DuckDB file."""
        profiles = _profiles()
        for output in profiles[DBT_PROFILE]["outputs"].values():
            output["path"] = str(self.duckdb_path)
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        (self.profiles_dir / "profiles.yml").write_text(yaml.safe_dump(profiles, sort_keys=False))
        return self.profiles_dir

    def _configure(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """``con`` with the settings dbt's own connection to the file has (the profile's)."""
        for name, value in scratch_settings(self.lake.environment.dbt_target).items():
            quoted = value.replace("'", "''")
            con.execute(f"SET {name} = '{quoted}'")  # from the project's own profile
        return con

    @contextmanager
    def database(self, schema: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the DuckDB file with ``schema`` created, closed afterwards."""
        self.directory.mkdir(parents=True, exist_ok=True)
        con = self._configure(duckdb.connect(str(self.duckdb_path)))
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            yield con
        finally:
            con.close()

    def load_cleansed(self, versions: dict[str, int] | None = None) -> dict[str, int]:
        """Every cleansed table, at a pinned version, in DuckDB's ``cleansed`` schema: a view
        over the version's files where DuckDB reads them, else a copy."""
        pinned: dict[str, int] = {}
        with self.database(CLEANSED_SCHEMA) as con:
            for name in SOURCES:
                ref = self.lake.input_table(Layer.CLEANSED, name)  # a branch may read prod's
                if ref.version is None:
                    # Nothing published yet: no stale copy may stand in for it. Only models
                    # that do not read it can be built (automation selects exactly those).
                    drop_relation(con, CLEANSED_SCHEMA, name)
                    continue
                version = (versions or {}).get(name, ref.version)
                table = f"{CLEANSED_SCHEMA}.{name}"
                drop_relation(con, CLEANSED_SCHEMA, name)
                dt = self.lake.open_input(ref, version)
                scan = None if dt is None else delta.native_scan(dt)
                if scan is not None:
                    # A view over the version's own files, which dbt (another process,
                    # the same DuckDB file) reads where they lie: no copy per run.
                    con.execute(f"CREATE VIEW {table} AS {scan}")
                else:  # S3: copied in (a view over an Arrow dataset dies with `con`)
                    frame = delta.read(ref.uri, self.lake.storage_options, version=version)
                    copy_in(con, table, frame.to_arrow())
                pinned[name] = version
        return pinned

    def load_marts(self, models: Iterable[str] | None = None) -> dict[str, str]:
        """Copy published marts (default: all; in a branch: prod's, pinned, unless the branch
        rebuilt them) into DuckDB's ``marts`` schema, where refs to models dbt does not
        build, and deferred refs, find them."""
        loaded: dict[str, str] = {}
        with self.database(MARTS_SCHEMA) as con:
            for model in mart_models() if models is None else sorted(models):
                ref = self.lake.input_table(Layer.MARTS, model)
                dt = self.lake.open_input(ref)
                if dt is None:
                    continue
                copy_in(con, f"{MARTS_SCHEMA}.{model}", dt.to_pyarrow_dataset())
                loaded[model] = f"v{dt.version()}{' (prod, pinned)' if ref.from_prod else ''}"
        return loaded

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the scratch database (after dbt has released it)."""
        return self._configure(duckdb.connect(str(self.duckdb_path), read_only=True))

    def export(
        self,
        con: duckdb.DuckDBPyConnection,
        model: str,
        stamp: delta.Stamp,
        inputs: MartInputs,
        changes: SliceChanges | None = None,
        rewrite: bool = False,
    ) -> tuple[DeltaTable, bool]:
        """Write one dbt-built (and already judged) table to marts/<model> as a single
        atomic Delta commit that also publishes it: only its ``changes`` when the table is
        still at the version the incremental build started from, else the whole table.

        Skipped when the published table was built from the same inputs (cleansed
        versions and dbt code), or from newer ones (another run got there first): a rerun
        with nothing new leaves every version unchanged, and a slow run never overwrites a
        newer build. ``rewrite`` (a full refresh) writes over a table built from the same
        inputs too, so a refresh repairs a table whatever its history. Returns the table
        and whether a new version was written.
        """
        target = self.lake.writable(Layer.MARTS, model)

        def attempt() -> tuple[DeltaTable, bool]:
            snapshot = target.snapshot()
            current = snapshot.dt
            if current is not None:
                built = delta.latest_value(current, MART_INPUTS_KEY)
                published = None if built is None else MartInputs.from_json(built)
                repaired = rewrite and published == inputs
                if published is not None and published.covers(inputs) and not repaired:
                    return current, False
            txns = {delta.PUBLISHED: snapshot.next_version, **delta.clear_rejection(snapshot)}
            extra = {MART_INPUTS_KEY: inputs.to_json()}
            if changes is not None and snapshot.version == changes.base_version:
                changes.write(snapshot, stamp, txns, extra)
                assert snapshot.dt is not None
                return snapshot.dt, True
            # identifiers from the dbt manifest and lakehouse.sources, not data (bandit B608)
            query = f"SELECT * FROM {MARTS_SCHEMA}.{model}"  # nosec B608
            size = None
            if model in MART_CLUSTERS:
                query += f" ORDER BY {MART_CLUSTERS[model]}"
                size = CLUSTERED_FILE_SIZE
            # streamed into the Delta writer: a large mart is never whole in memory as Arrow
            rows = con.sql(query).fetch_record_batch(1 << 17)
            snapshot.replace(rows, stamp, txns=txns, extra=extra, file_size=size)
            assert snapshot.dt is not None
            return snapshot.dt, True

        return delta.retry_on_conflict(attempt, f"marts/{model}")


def read_manifest(manifest_path: Path) -> dict[str, Any]:
    """The parsed dbt manifest, parsed once per file version (a large project's manifest
    takes a while to parse, and a run consults it for every model). Do not mutate it."""
    stat = manifest_path.stat()
    return _parsed_manifest(str(manifest_path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _parsed_manifest(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def mart_models(manifest_path: Path = DBT_MANIFEST) -> list[str]:
    manifest = read_manifest(manifest_path)
    return sorted(n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model")


def mart_keys(manifest_path: Path) -> dict[str, str]:
    """Model -> the column or expression its dbt ``unique`` test is on."""
    manifest = read_manifest(manifest_path)
    keys: dict[str, str] = {}
    for node in manifest["nodes"].values():
        meta = node.get("test_metadata") or {}
        attached = node.get("attached_node") or ""
        if meta.get("name") == "unique" and attached.startswith("model."):
            column = meta.get("kwargs", {}).get("column_name")
            if column:
                keys[manifest["nodes"][attached]["name"]] = str(column)
    return keys


@dataclass(frozen=True)
class SlimBuild:
    """A branch's slim dbt build: what to select, and prod's state to compare and defer to."""

    select: str
    state: Path

    def models(self, workspace: MartWorkspace, target: str) -> set[str]:
        """The models the selection names, per ``dbt ls`` against prod's state."""
        result = subprocess.run(
            [
                dbt_executable(),
                "ls",
                "--quiet",
                "--resource-type",
                "model",
                "--output",
                "name",
                "--select",
                self.select,
                "--state",
                str(self.state),
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(workspace.write_profile()),
                "--target",
                target,
                "--target-path",
                str(workspace.directory / "ls-target"),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def slim_selection(workspace: MartWorkspace) -> SlimBuild | None:
    """A branch's slim build; None outside a branch (or when prod has no dbt state yet).

    Selected: models whose code differs from prod's pinned manifest (``state:modified+``)
    and models downstream of any cleansed table the branch rebuilt itself.
    """
    from lakehouse.branch import prod_manifest_dir

    lake = workspace.lake
    if not lake.is_branch:
        return None
    state = prod_manifest_dir(lake, workspace.directory / "prod-state")
    if state is None:
        return None  # prod has never built its marts: build all of them
    rebuilt = [
        f"source:{CLEANSED_SCHEMA}.{name}+"
        for name in SOURCES
        if delta.open_table(lake.table_uri(Layer.CLEANSED, name), lake.storage_options) is not None
    ]
    return SlimBuild(" ".join(["state:modified+", *rebuilt]), state)


def save_dbt_state(lake: Lake, manifest_path: Path) -> bool:
    """Save the project's parse as the state branches compare their dbt code with, unless
    a project file changed since that parse (then it may not be the code that just ran:
    the state saved last stays). Says whether it saved."""
    from lakehouse.dbt_prepared import parse_is_current
    from lakehouse.pins import DBT_STATE

    if not parse_is_current(manifest_path.parent.parent):  # <project>/target/manifest.json
        return False
    lake.write_object(lake.uri(DBT_STATE), manifest_path.read_bytes())
    return True


@dataclass(frozen=True)
class MartInputs:
    """What a mart version was built from: the cleansed versions and the dbt code."""

    cleansed_versions: dict[str, int]
    dbt_code: str

    def to_json(self) -> str:
        return json.dumps(
            {"cleansed_versions": self.cleansed_versions, "dbt_code": self.dbt_code}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> MartInputs:
        data = json.loads(text)
        return cls({k: int(v) for k, v in data["cleansed_versions"].items()}, data["dbt_code"])

    def covers(self, other: MartInputs) -> bool:
        """Built from the same code and from the same or newer versions of every table."""
        return self.dbt_code == other.dbt_code and all(
            self.cleansed_versions.get(t, -1) >= v for t, v in other.cleansed_versions.items()
        )


def dbt_code_fingerprint(manifest_path: Path) -> str:
    """One hash over every model's SQL checksum: any model edit rebuilds all marts."""
    manifest = read_manifest(manifest_path)
    checksums = sorted(
        f"{uid}={node['checksum']['checksum']}"
        for uid, node in manifest["nodes"].items()
        if node.get("resource_type") == "model"
    )
    return hashlib.sha256("\n".join(checksums).encode()).hexdigest()[:16]


def downstream_models(manifest_path: Path, model: str) -> list[str]:
    """Models built from ``model``, directly or not (from the dbt manifest's child map)."""
    manifest = read_manifest(manifest_path)
    children: dict[str, list[str]] = manifest["child_map"]
    prefix = "model."
    start = next(
        uid
        for uid, node in manifest["nodes"].items()
        if node["name"] == model and uid.startswith(prefix)
    )
    seen: list[str] = []
    stack = [start]
    while stack:
        for child in children.get(stack.pop(), []):
            if child.startswith(prefix) and child not in seen:
                seen.append(child)
                stack.append(child)
    return sorted(manifest["nodes"][uid]["name"] for uid in seen)


def model_parents(manifest_path: Path, model: str) -> list[tuple[str, str]]:
    """(layer, table) of what a model reads: cleansed sources and other marts."""
    manifest = read_manifest(manifest_path)
    node = next(
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["name"] == model
    )
    parents = []
    for uid in node["depends_on"]["nodes"]:
        parent = manifest["sources"].get(uid) or manifest["nodes"].get(uid) or {}
        if parent.get("resource_type") == "source":
            parents.append((str(parent["source_name"]), str(parent["name"])))
        elif parent.get("resource_type") == "model":
            parents.append((Layer.MARTS.value, str(parent["name"])))
    return sorted(parents)


ColumnSources = dict[str, list[tuple[str, str, str]]]
"""Output column -> the (layer, table, column) it is computed from."""


def column_lineage(
    duckdb_path: Path, model: str, compiled_sql: str, cache: Path | None = None
) -> ColumnSources:
    """Column-level lineage of one compiled model, traced through its SQL with sqlglot
    against the schemas dbt just built (read after dbt has released the DuckDB file).

    Tracing takes a while per column and depends only on the SQL and the schemas, so with
    ``cache`` (a folder) each distinct pair is traced once and read back afterwards."""
    import sqlglot

    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    if cache is None:
        return _trace_lineage(model, compiled_sql, rows)
    key = json.dumps([sqlglot.__version__, model, compiled_sql, rows], default=str)
    path = cache / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    try:
        stored = json.loads(path.read_text())
        return {
            str(column): [(str(layer), str(table), str(name)) for layer, table, name in sources]
            for column, sources in stored.items()
        }
    except (OSError, ValueError, TypeError, AttributeError):  # none yet, or damaged: traced
        pass
    traced = _trace_lineage(model, compiled_sql, rows)
    text = json.dumps(traced)
    save_cache_file(path, lambda fh: fh.write(text.encode()))
    return traced


def _trace_lineage(model: str, compiled_sql: str, rows: list[tuple[Any, ...]]) -> ColumnSources:
    import sqlglot
    from sqlglot import exp
    from sqlglot.lineage import Node, lineage

    schema: dict[str, dict[str, dict[str, str]]] = {}
    for table_schema, table, column, data_type in rows:
        schema.setdefault(table_schema, {}).setdefault(table, {})[column] = data_type
    parsed = sqlglot.parse_one(compiled_sql, dialect="duckdb")
    if not isinstance(parsed, exp.Query):
        return {}
    try:
        # Every column in one walk: the query is qualified once and shared work is traced
        # once (per column, each call qualified the whole query again).
        every: dict[str, Node] | None = lineage(None, parsed, schema=schema, dialect="duckdb")
    except sqlglot.errors.SqlglotError:
        every = None  # one column sqlglot cannot trace: the others column by column
    out: ColumnSources = {}
    for column in schema.get(MARTS_SCHEMA, {}).get(model, {}):
        node = None if every is None else every.get(column)
        if node is None:
            try:
                node = lineage(column, parsed, schema=schema, dialect="duckdb")
            except sqlglot.errors.SqlglotError:
                continue  # lineage is observability: a column sqlglot cannot trace is left out
        sources = {
            (*_lineage_table(n.source.db, n.source.name), n.name.rsplit(".", 1)[-1])
            for n in node.walk()
            if isinstance(n.source, exp.Table)
        }
        out[column] = sorted(sources)
    return out


def _lineage_table(schema: str, name: str) -> tuple[str, str]:
    """The lake table a relation of the scratch database stands for."""
    if schema == PUBLISHED_SCHEMA:
        return MARTS_SCHEMA, name
    if schema == CHANGES_SCHEMA and name.startswith(NARROWED):
        return CLEANSED_SCHEMA, name.removeprefix(NARROWED)
    return schema, name


def read_mart(lake: Lake, model: str, version: int | None = None) -> pl.DataFrame:
    return delta.read(lake.table_uri(Layer.MARTS, model), lake.storage_options, version=version)
