"""What changed in the cleansed layer since the published marts were built: the keyed marts
(orders, order_items, customers) are dbt incremental models that rebuild only the rows
those changes reach. The customers mart rebuilds the customers whose rows, orders or
tweets changed; the orders and order_items marts rebuild the orders whose own rows or
items changed, and the later orders of their customers (whose place in the customer's
history may have moved): for a day of new orders, about that day's orders, not every
order of every customer who ordered.

Changes are read from the Delta log, not from the data: the files a cleansed table gained
and lost between the version the marts were built from and the pinned one. Only rows
that differ between the two (a MERGE rewrites a file with its unchanged rows too) count,
so a table whose versions moved without a data change (a re-sent file, compaction) adds
nobody. A change the keyed rebuild cannot express, or one so large that rebuilding
everything is cheaper, asks for a full build, with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakehouse import delta
from lakehouse.contracts import Verification, load_contract
from lakehouse.incremental_checks import (
    VerifiedBase,
    checks_by_row,
    narrow_references,
    pinned_tables,
    verify_in_two_parts,
)
from lakehouse.key_index import expose_files_holding
from lakehouse.marts import (
    CHANGES_SCHEMA,
    CLEANSED_SCHEMA,
    MART_CLUSTERS,
    MART_INPUTS_KEY,
    MARTS_SCHEMA,
    NARROWED,
    PUBLISHED_SCHEMA,
    MartInputs,
    copy_in,
    drop_relation,
)
from lakehouse.sources import ROW_HASH, SOURCES
from lakehouse.storage import Lake, Layer

KEYED_MARTS = ("order_items", "orders", "customers")
"""Marts rebuilt by key: a row depends only on its order's rows (and its customer's
earlier orders), or on its customer's rows."""

CUSTOMER_TABLES = {"customers": "customer_id", "orders": "customer_id", "tweets": "customer_id"}
"""Cleansed tables whose rows name their customer."""

DIMENSIONS = ("products", "supplies", "stores")
"""Cleansed tables every order depends on: a change in them rebuilds every mart."""

FULL_BUILD_SHARE = 0.25
"""Above this share of customers touched, a full build costs less than a keyed one."""


@dataclass(frozen=True)
class Increment:
    """Rebuild the keyed marts for these customers, on top of marts built from ``base``."""

    base: dict[str, int]
    customers: pl.DataFrame  # one column, customer_id
    of_total: int
    orders: pl.DataFrame
    """The orders whose own rows or items changed (one column, order_id); ``load_increment``
    adds the later orders of their customers, whose place in the customer's history may
    have moved."""
    pinned: dict[str, int]
    """The cleansed versions the build reads (what ``orders`` changed in)."""

    def describe(self) -> str:
        return f"{self.customers.height} of {self.of_total} customers changed"


@dataclass(frozen=True)
class FullBuild:
    reason: str

    def describe(self) -> str:
        return f"full build: {self.reason}"


def _dataset(dt: DeltaTable) -> pads.FileSystemDataset:
    dataset = dt.to_pyarrow_dataset()
    assert isinstance(dataset, pads.FileSystemDataset)
    return dataset


def _read_files(
    dataset: pads.FileSystemDataset, paths: set[str], columns: list[str]
) -> pl.DataFrame:
    fragments = [f for f in dataset.get_fragments() if f.path in paths]
    present = [c for c in columns if c in dataset.schema.names]
    subset = pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
    frame = pl.from_arrow(subset.to_table(columns=present))
    assert isinstance(frame, pl.DataFrame)
    return frame


def changed_rows(old: DeltaTable, new: DeltaTable, columns: list[str]) -> pl.DataFrame:
    """``columns`` of every row one version has and the other has not (both sides of an
    update), from the files the newer version added and removed."""
    old_set, new_set = _dataset(old), _dataset(new)
    old_paths = {f.path for f in old_set.get_fragments()}
    new_paths = {f.path for f in new_set.get_fragments()}
    wanted = [*columns, ROW_HASH]
    gained = _read_files(new_set, new_paths - old_paths, wanted)
    lost = _read_files(old_set, old_paths - new_paths, wanted)
    if not gained.height or not lost.height:
        return pl.concat([gained, lost], how="vertical_relaxed").select(columns)
    lost = lost.select(gained.columns).cast(gained.schema)
    return pl.concat(
        [gained.join(lost, on=wanted, how="anti"), lost.join(gained, on=wanted, how="anti")],
        how="vertical",
    ).select(columns)


def published_base(lake: Lake, dbt_code: str) -> dict[str, int] | FullBuild:
    """The cleansed versions every published keyed mart was built from, with this dbt
    code: what an increment builds on."""
    bases = []
    for model in KEYED_MARTS:
        dt = lake.published_table(Layer.MARTS, model)
        built = None if dt is None else delta.latest_value(dt, MART_INPUTS_KEY, dt.version())
        if built is None:
            return FullBuild(f"marts/{model} has no published build to add to")
        inputs = MartInputs.from_json(built)
        if inputs.dbt_code != dbt_code:
            return FullBuild("the dbt models changed since the published marts were built")
        bases.append(inputs.cleansed_versions)
    if any(b != bases[0] for b in bases):
        return FullBuild("the published keyed marts were built from different snapshots")
    return bases[0]


def plan_increment(lake: Lake, inputs: MartInputs) -> Increment | FullBuild:
    """Whether the published keyed marts can be brought to ``inputs`` (the cleansed
    versions this run pinned, the dbt code) by rebuilding some customers, and which."""
    base = published_base(lake, inputs.dbt_code)
    if isinstance(base, FullBuild):
        return base
    pinned = inputs.cleansed_versions
    if set(base) != set(SOURCES) or set(pinned) != set(SOURCES):
        return FullBuild("a cleansed table was not published when the marts were built")
    if any(pinned[t] < base[t] for t in SOURCES):
        return FullBuild("the published marts were built from newer cleansed versions")
    tables: dict[str, tuple[DeltaTable, DeltaTable]] = {}
    try:
        for table in SOURCES:
            if pinned[table] == base[table]:
                continue
            ref = lake.input_table(Layer.CLEANSED, table)
            old, new = lake.open_input(ref, base[table]), lake.open_input(ref, pinned[table])
            if old is None or new is None:
                return FullBuild(f"cleansed/{table} v{base[table]} is no longer readable")
            tables[table] = (old, new)
        for table in DIMENSIONS:
            if table in tables and changed_rows(*tables[table], list(SOURCES[table].key)).height:
                return FullBuild(f"cleansed/{table} changed, and every order depends on it")
        touched = [pl.Series("customer_id", [], pl.String)]
        orders = [pl.Series("order_id", [], pl.String)]
        for table, column in CUSTOMER_TABLES.items():
            if table == "orders" and table in tables:
                changed = changed_rows(*tables[table], [column, "order_id"])
                touched.append(changed[column].cast(pl.String))
                orders.append(changed["order_id"].cast(pl.String))
            elif table in tables:
                touched.append(changed_rows(*tables[table], [column])[column].cast(pl.String))
        if "items" in tables:
            # (their orders' customers join the changed ones in ``load_increment``)
            order_ids = changed_rows(*tables["items"], ["order_id"])["order_id"]
            orders.append(order_ids.cast(pl.String))
    except (OSError, pa.ArrowException, DeltaError) as exc:  # vacuumed, purged, expired
        reason = str(exc).splitlines()[0]
        return FullBuild(f"the changes could not be read from the Delta log ({reason})")
    customers = pl.concat(touched).drop_nulls().unique().sort().to_frame("customer_id")
    total = _customer_count(lake, pinned["customers"])
    if total and customers.height > FULL_BUILD_SHARE * total:
        return FullBuild(
            f"{customers.height} of {total} customers changed (more than "
            f"{FULL_BUILD_SHARE:.0%}: rebuilding everything costs less)"
        )
    changed_orders = pl.concat(orders).drop_nulls().unique().sort().to_frame("order_id")
    return Increment(dict(base), customers, total, changed_orders, dict(pinned))


def _customer_count(lake: Lake, version: int) -> int:
    dt = lake.published_table(Layer.CLEANSED, "customers", version)
    return 0 if dt is None else delta.row_count(dt)


# -- in the scratch DuckDB: the published keyed marts, the slice to rebuild, its diff ------
BEFORE_SCHEMA = "lakehouse_before"
"""Each keyed mart's rows an increment rebuilds, as published before this build."""
DELETED = "_lakehouse_deleted"

# Every identifier in this module's SQL is one of these constants or a mart's name from
# the dbt manifest, never data (bandit B608).
_TOUCHED = "lakehouse_touched"
"""Working views of ``load_increment``: the files of a table that may hold some keys."""
_ORDERS_TOUCHED = f"""
    SELECT customer_id, min(ordered_at) AS since FROM (
        SELECT customer_id, ordered_at FROM {_TOUCHED}.published_orders
        WHERE order_id IN (SELECT order_id FROM direct)
        UNION ALL
        SELECT customer_id, ordered_at FROM {_TOUCHED}.cleansed_orders
        WHERE order_id IN (SELECT order_id FROM direct)
    )
    WHERE customer_id IS NOT NULL GROUP BY customer_id
"""  # nosec B608
"""Each customer of an order whose own row or items changed, and the earliest time of such
an order (as published or as now; NULL when none has one)."""


def _later_orders(source: str, since: Any) -> str:
    """The orders in ``source`` of a touched customer at or after its ``since`` (and any
    without a time, which sort last), behind a constant bound (the earliest ``since``) that
    lets DuckDB skip the files of a time-sorted table that end before it."""
    bound = "true" if since is None else f"o.ordered_at >= TIMESTAMPTZ '{since.isoformat()}'"
    return (
        f"SELECT o.order_id FROM {source} o JOIN {_TOUCHED}.since s USING (customer_id) "  # nosec B608
        f"WHERE ({bound} AND o.ordered_at >= s.since) "
        "UNION ALL "
        f"SELECT o.order_id FROM {source} o JOIN {_TOUCHED}.since s USING (customer_id) "  # nosec B608
        "WHERE o.ordered_at IS NULL"
    )


_SLICED_BY: dict[str, tuple[str, str]] = {
    "orders": ("orders", "order_id"),
    "order_items": ("orders", "order_id"),
    "customers": ("customers", "customer_id"),
}
"""Each keyed mart's slice: the changes table listing what to rebuild, and the column of
the mart (and of that table) it names."""


def _listed(changes: str, column: str) -> str:
    return f"{column} IN (SELECT {column} FROM {CHANGES_SCHEMA}.{changes})"  # nosec B608


_ORDERS = _listed("orders", "order_id")
_MART_KEYS = {"orders": "order_id", "order_items": "order_item_id", "customers": "customer_id"}
MART_SLICES: dict[str, tuple[str, str]] = {
    model: (key, _listed(*_SLICED_BY[model])) for model, key in _MART_KEYS.items()
}
"""Each keyed mart's key and the rows an increment rebuilds (the models' own filters)."""
PUBLISHED_CLUSTER = "_lakehouse_published_cluster"


DAILY_MARTS = ("daily_location_revenue",)
"""Marts that aggregate orders by day: an increment rebuilds only the days whose orders
changed (``changed_order_days()`` in dbt/macros/changes.sql), on top of the published
table, when that was built from the same inputs as the keyed marts it adds to."""

SLICED = tuple(MART_SLICES)
"""dbt gets each keyed mart as the rows it rebuilds alone (no copy of the table),
and the candidate is the published rest plus the rebuilt rows. The one model reading a
keyed mart whole (daily_location_revenue reads every order) reads that same union
(``all_orders()`` in dbt/macros/changes.sql)."""


def _rest(model: str) -> str:
    """The published rows an increment keeps as they are (a NULL key is never rebuilt)."""
    _, where = MART_SLICES[model]
    return f"SELECT * FROM {PUBLISHED_SCHEMA}.{model} WHERE NOT coalesce({where}, false)"  # nosec B608


@dataclass(frozen=True)
class LoadedIncrement:
    """What ``load_increment`` made ready: the version each keyed mart was published at,
    and the daily marts dbt adds the changed days to (the others it builds whole)."""

    keyed_versions: dict[str, int]
    by_day: tuple[str, ...]


def load_increment(
    con: duckdb.DuckDBPyConnection, lake: Lake, increment: Increment
) -> LoadedIncrement:
    """Make ``con``'s database ready for an incremental dbt build: the changed customers
    and the orders to rebuild (``_load_orders_to_rebuild``), each keyed mart's rows for them as
    published, and the tables dbt's incremental models update, as those rows alone
    (``assemble`` completes them after dbt), and the daily marts as published."""
    for schema in (MARTS_SCHEMA, CHANGES_SCHEMA, BEFORE_SCHEMA, PUBLISHED_SCHEMA):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    versions: dict[str, int] = {}
    published: dict[str, DeltaTable] = {}
    for model in MART_SLICES:
        dt = lake.published_table(Layer.MARTS, model)
        assert dt is not None, f"marts/{model} is not published"
        published[model] = dt
        scan = delta.native_scan(dt)
        if scan is None:  # S3: copied through Arrow
            copy_in(con, f"{PUBLISHED_SCHEMA}.{model}", dt.to_pyarrow_dataset())
        else:  # a view over the version's files (paths from the Delta log)
            con.execute(f"CREATE OR REPLACE VIEW {PUBLISHED_SCHEMA}.{model} AS {scan}")
        versions[model] = dt.version()
    con.register("changed", increment.customers.to_arrow())
    con.execute(f"CREATE OR REPLACE TABLE {CHANGES_SCHEMA}.customers AS FROM changed")
    con.unregister("changed")
    cleansed = {
        table: lake.published_table(Layer.CLEANSED, table, increment.pinned[table])
        for table in ORDER_KEYED_CLEANSED
    }
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_TOUCHED}")
    _load_orders_to_rebuild(con, lake, increment, published["orders"], cleansed["orders"])
    listed = {
        changes: con.sql(f"SELECT {column} FROM {CHANGES_SCHEMA}.{changes}").to_arrow_table()  # nosec B608
        for changes, column in set(_SLICED_BY.values())
    }
    # Each mart's slice as published, read from the files that may hold its keys.
    for model, (_, where) in MART_SLICES.items():
        changes, column = _SLICED_BY[model]
        held = f"{_TOUCHED}.published_{model}"
        _files_holding(con, held, lake, published[model], column, listed[changes])
        rows = f"SELECT * FROM {held} WHERE {where}"  # nosec B608
        con.execute(f"CREATE OR REPLACE TABLE {BEFORE_SCHEMA}.{model} AS {rows}")
    for table, dt in cleansed.items():
        _narrow_cleansed(con, lake, table, dt, listed["orders"])
    con.execute(f"DROP SCHEMA {_TOUCHED} CASCADE")
    for model in SLICED:
        # Empty: the model's pre-hook would delete every row of the slice before it appends
        # the rebuilt ones (``assemble`` adds the rest after dbt).
        con.execute(
            f"CREATE OR REPLACE TABLE {MARTS_SCHEMA}.{model} AS "  # nosec B608
            f"FROM {BEFORE_SCHEMA}.{model} WHERE false"
        )
    return LoadedIncrement(versions, _load_daily_marts(con, lake, published["orders"]))


def _load_orders_to_rebuild(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    increment: Increment,
    published: DeltaTable,
    cleansed: DeltaTable | None,
) -> None:
    """``lakehouse_changes.orders``: the orders whose own rows or items changed, and every
    later order of their customers (in the ``published`` orders mart and in ``cleansed``
    orders at the pinned version), whose number in the
    customer's history (``customer_order_number``) may have moved; an order's other
    columns read only its own row and items. The changed orders are looked up in the files
    that may hold them (``lakehouse.key_index``), the later ones past a constant time."""
    direct = increment.orders.to_arrow()
    con.register("direct", direct)
    try:
        for name, dt in (("published_orders", published), ("cleansed_orders", cleansed)):
            _files_holding(con, f"{_TOUCHED}.{name}", lake, dt, "order_id", direct)
        con.execute(f"CREATE OR REPLACE TABLE {_TOUCHED}.since AS {_ORDERS_TOUCHED}")
        # The customers of those orders are rebuilt too (an order whose items alone
        # changed names its customer nowhere else).
        con.execute(
            f"INSERT INTO {CHANGES_SCHEMA}.customers SELECT customer_id FROM {_TOUCHED}.since "  # nosec B608
            f"EXCEPT SELECT customer_id FROM {CHANGES_SCHEMA}.customers"
        )
        [(since,)] = con.execute(f"SELECT min(since) FROM {_TOUCHED}.since").fetchall()  # nosec B608
        later = " UNION ALL ".join(
            _later_orders(source, since)
            for source in (f"{PUBLISHED_SCHEMA}.orders", f"{CLEANSED_SCHEMA}.orders")
        )
        con.execute(
            f"CREATE OR REPLACE TABLE {CHANGES_SCHEMA}.orders AS "  # nosec B608
            f"SELECT order_id FROM direct UNION SELECT order_id FROM ({later})"
        )
    finally:
        con.unregister("direct")


ORDER_KEYED_CLEANSED = ("orders", "items")
"""Large cleansed tables whose rows name their order: an increment gives dbt the rows of
the orders it rebuilds (``cleansed_rows()`` in dbt/macros/changes.sql)."""


def _narrow_cleansed(
    con: duckdb.DuckDBPyConnection, lake: Lake, table: str, dt: DeltaTable | None, keys: pa.Table
) -> None:
    """``lakehouse_changes.cleansed_<table>``: the rows of the orders to rebuild (``keys``)
    in cleansed/<table> (``dt``, the pinned version), read from the files that may hold
    them: a view over those files where DuckDB reads them in place, else (S3) a copy."""
    held = f"{_TOUCHED}.cleansed_{table}_files"
    files = _files_holding(con, held, lake, dt, "order_id", keys)
    name = f"{CHANGES_SCHEMA}.{NARROWED}{table}"
    scan = delta.native_scan(dt, files) if dt is not None and files else None
    if scan is not None:  # dbt reads the files in place (the view outlives ``con``)
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM ({scan}) WHERE {_ORDERS}")  # nosec B608
    else:
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {held} WHERE {_ORDERS}")  # nosec B608


def _files_holding(
    con: duckdb.DuckDBPyConnection,
    name: str,
    lake: Lake,
    dt: DeltaTable | None,
    column: str,
    keys: pa.Table,
) -> list[str]:
    """``name``: the files of ``dt`` that may hold one of ``keys`` in ``column``."""
    assert dt is not None, "an increment reads published tables only"
    return expose_files_holding(con, name, lake.key_index(), dt, column, keys)


def _load_daily_marts(
    con: duckdb.DuckDBPyConnection, lake: Lake, orders: DeltaTable
) -> tuple[str, ...]:
    """Each daily mart as published, for dbt to rebuild its changed days in, when it was
    built from what the keyed marts (the published ``orders`` mart) were (else dbt builds
    it whole: no days go missing)."""
    inputs = delta.latest_value(orders, MART_INPUTS_KEY, orders.version())
    loaded = []
    for model in DAILY_MARTS:
        drop_relation(con, MARTS_SCHEMA, model)
        dt = lake.published_table(Layer.MARTS, model)
        if dt is None or delta.latest_value(dt, MART_INPUTS_KEY, dt.version()) != inputs:
            continue
        scan = delta.native_scan(dt)
        if scan is None:  # S3, or no rows
            copy_in(con, f"{MARTS_SCHEMA}.{model}", dt.to_pyarrow_dataset())
        else:
            con.execute(f"CREATE TABLE {MARTS_SCHEMA}.{model} AS {scan}")
        loaded.append(model)
    return tuple(loaded)


def assemble(con: duckdb.DuckDBPyConnection, built: Collection[str] = SLICED) -> None:
    """After dbt: each sliced mart it ``built`` becomes the candidate it is judged and
    written as, the published rows it kept (``<model>__kept``) plus the rows dbt rebuilt
    (``<model>__rebuilt``), under the name dbt built it as. (A sliced mart dbt failed to
    build is neither judged nor written.)"""
    for model in (m for m in SLICED if m in built):
        rebuilt, kept = f"{MARTS_SCHEMA}.{model}__rebuilt", f"{MARTS_SCHEMA}.{model}__kept"
        con.execute(f"ALTER TABLE {MARTS_SCHEMA}.{model} RENAME TO {model}__rebuilt")
        con.execute(f"CREATE VIEW {kept} AS {_rest(model)}")
        rows = f"SELECT * FROM {kept} UNION ALL BY NAME SELECT * FROM {rebuilt}"  # nosec B608
        con.execute(f"CREATE VIEW {MARTS_SCHEMA}.{model} AS {rows}")


def verify_rebuilt(
    con: duckdb.DuckDBPyConnection,
    scratch: Path,
    lake: Lake,
    model: str,
    versions: Mapping[str, int],
    base: VerifiedBase,
) -> Verification | None:
    """Verify an assembled keyed mart (on ``con``, the scratch database ``scratch``) by the
    rows dbt rebuilt, on top of its published version ``base`` (``incremental_checks``);
    None when it must be verified whole."""
    contract = load_contract(Layer.MARTS, model)
    by_row = checks_by_row(lake, contract, base, versions)
    if not by_row:
        return None
    [(rebuilt,)] = con.execute(f"SELECT count(*) FROM {MARTS_SCHEMA}.{model}__rebuilt").fetchall()  # nosec B608
    # Not a lakehouse.duck session: the scratch database attached here would stay attached
    # to the pooled database, and Soda's catalog lookups in later sessions would find it.
    added = duckdb.connect()
    try:
        added.execute("SET TimeZone = 'UTC'")
        path = str(scratch).replace("'", "''")
        added.execute(f"ATTACH '{path}' AS scratch (READ_ONLY)")
        # the rebuilt rows under the mart's own name, and what its contract references
        for layer, table in {(Layer.MARTS, model), *contract.references}:
            source = f"{table}__rebuilt" if (layer, table) == (Layer.MARTS, model) else table
            added.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
            added.execute(f"CREATE VIEW {layer}.{table} AS FROM scratch.{layer}.{source}")
        # of a large referenced table, only the files that may hold the rebuilt rows'
        # values: the cleansed versions dbt built from (a mart referenced is the assembled
        # one, in the scratch database)
        pinned_cleansed = pinned_tables(lake, versions, layers={Layer.CLEANSED.value})
        narrow_references(
            added, f"{MARTS_SCHEMA}.{model}", by_row, pinned_cleansed, lake.key_index()
        )
        published = lake.published_table(Layer.MARTS, model, base.version)
        kept = f"scratch.{MARTS_SCHEMA}.{model}__kept"
        if published is not None and any(c.type == "duplicate" for c in by_row):
            kept = _kept_holding_rebuilt_keys(added, lake, model, published) or kept
        return verify_in_two_parts(
            con,
            contract,
            versions,
            by_row,
            show_added=lambda: added,
            # the kept rows are published ones: the published version's newest bounds theirs
            kept_newest=lambda column: (
                None if published is None else delta.newest(published, column)
            ),
            kept=kept,
            scope=f"the {rebuilt} rows rebuilt for the changes over v{base.version}",
        )
    finally:
        added.close()


def _kept_holding_rebuilt_keys(
    added: duckdb.DuckDBPyConnection, lake: Lake, model: str, dt: DeltaTable
) -> str | None:
    """A view of the kept rows that a duplicate check of the rebuilt rows must read: those
    in the files of the published version ``dt`` whose key hashes hold a rebuilt key
    (``lakehouse.key_index``; the rest cannot repeat one), less the rebuilt slice's own
    published rows (``before``: keys are unique in the verified version, so a key is kept
    or in the slice). None: read every kept row."""
    key = MART_SLICES[model][0]
    files = sorted(delta.file_paths(dt))
    if not files:
        return None
    q = delta.identifiers(key)
    rebuilt = added.sql(
        f"SELECT {q} FROM scratch.{MARTS_SCHEMA}.{model}__rebuilt WHERE {q} IS NOT NULL"  # nosec B608
    ).to_arrow_table()
    index = lake.key_index()
    held = index.candidates(dt, [key], index.probe_hashes(dt, rebuilt, [key], typed_as=files[0]))
    view = f"{MARTS_SCHEMA}.__kept_{model}"
    if not held:
        added.execute(
            f"CREATE VIEW {view} AS FROM scratch.{MARTS_SCHEMA}.{model}__kept WHERE false"  # nosec B608
        )
        return view
    delta.duckdb_view(added, f"{MARTS_SCHEMA}.__held_{model}", dt, held)
    added.execute(
        f"CREATE VIEW {view} AS SELECT * FROM {MARTS_SCHEMA}.__held_{model} p "  # nosec B608
        f"WHERE NOT EXISTS (SELECT 1 FROM scratch.{BEFORE_SCHEMA}.{model} b WHERE b.{q} = p.{q})"
    )
    return view


@dataclass(frozen=True)
class SliceChanges:
    """What an incremental build changed in one keyed mart, to commit on the version it
    was built on: rows new or changed, and the keys of rows gone."""

    model: str
    key: str
    base_version: int
    upserts: pa.Table
    deletes: pa.Table
    updated: int
    published: pa.Table | None = None
    """For a clustered mart (``MART_CLUSTERS``): each changed or deleted key's row as
    published, its key and cluster value (what pins the MERGE to the files holding them)."""

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection, model: str, base_version: int) -> SliceChanges:
        key, where = MART_SLICES[model]
        before = f"{BEFORE_SCHEMA}.{model}"
        # The candidate's rows in the slice are the rebuilt ones (the kept rows are those
        # outside it), read without scanning the published table; in the published
        # column order (before's), as EXCEPT compares by position.
        now = (
            f"SELECT * FROM {before} WHERE false UNION ALL BY NAME "  # nosec B608
            f"SELECT * FROM {MARTS_SCHEMA}.{model}__rebuilt WHERE {where}"
        )
        changed = f"{now} EXCEPT SELECT * FROM {before}"  # nosec B608
        gone = f"SELECT {key} FROM {before} EXCEPT SELECT {key} FROM ({now})"  # nosec B608
        old = f"SELECT count(*) FROM ({changed}) WHERE {key} IN (SELECT {key} FROM {before})"  # nosec B608
        upserts = con.sql(changed).to_arrow_table()
        deletes = con.sql(gone).to_arrow_table()
        ((updated,),) = con.execute(old).fetchall()
        published = None
        cluster = MART_CLUSTERS.get(model)
        if cluster is not None:
            touched = f"SELECT {key} FROM ({changed}) UNION SELECT {key} FROM ({gone})"  # nosec B608
            published = con.sql(
                f"SELECT {key}, {cluster} AS {PUBLISHED_CLUSTER} FROM {before} "  # nosec B608
                f"WHERE {key} IN ({touched})"
            ).to_arrow_table()
        return cls(model, key, base_version, upserts, deletes, int(updated), published)

    def describe(self) -> str:
        inserted = self.upserts.num_rows - self.updated
        return f"{inserted} inserted, {self.updated} updated, {self.deletes.num_rows} deleted"

    def write(
        self,
        snapshot: delta.Snapshot,
        stamp: delta.Stamp,
        txns: dict[str, int],
        extra: dict[str, Any],
    ) -> None:
        """Commit the changes in one Delta commit: an append when every row is new (no
        file of the table is rewritten), else a MERGE on the key."""
        if not self.updated and not self.deletes.num_rows:
            snapshot.append(self.upserts, stamp, txns=txns, extra=extra)
            return
        columns = self.upserts.column_names
        gone = pa.table(
            {
                c: self.deletes.column(c)
                if c == self.key
                else pa.nulls(self.deletes.num_rows, self.upserts.schema.field(c).type)
                for c in columns
            },
            schema=self.upserts.schema,
        )
        source = pa.concat_tables(
            [
                self.upserts.append_column(DELETED, pa.repeat(False, self.upserts.num_rows)),
                gone.append_column(DELETED, pa.repeat(True, gone.num_rows)),
            ]
        )
        same = {c: f"s.{c}" for c in columns}
        pinned: dict[str, str] = {}
        cluster = MART_CLUSTERS.get(self.model)
        if (
            cluster is not None
            and self.published is not None
            and not self.published.column(PUBLISHED_CLUSTER).null_count
        ):
            # Each source row also names its key's published cluster value (none for a new
            # key, which matches nothing and is inserted), so delta-rs reads only the files
            # whose span of that column holds one: the matches are the published rows, the
            # same as on the key alone. A published row without a value: the key alone.
            source = source.join(self.published, self.key, join_type="left outer")
            pinned = {cluster: PUBLISHED_CLUSTER}
        snapshot.merge(
            source,
            stamp,
            on=[self.key],
            also_equal=pinned,
            delete_when=f"s.{DELETED}",
            update=same,
            update_when=f"NOT s.{DELETED}",
            insert=same,
            insert_when=f"NOT s.{DELETED}",
            txns=txns,
            extra=extra,
        )
