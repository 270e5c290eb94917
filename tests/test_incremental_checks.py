"""Checks that read only what a version added reach the verdict a whole verification
reaches: every check's outcome and failing-row count equal, on a folder and on S3, for
clean appends, bad rows, keys repeated across the old and new rows, a referenced key that
disappeared, and a MERGE."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
import yaml

from lakehouse import delta, publish
from lakehouse.contracts import (
    Contract,
    Verification,
    load_contract,
    register_empty,
    register_inputs,
    verify,
    verify_registered,
)
from lakehouse.incremental_checks import VerifiedBase, verify_in_two_parts, verify_since
from lakehouse.increments import verify_rebuilt
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, Layer
from tests.conftest import cleansed_items, put_table, record_candidates

ITEMS = load_contract(Layer.CLEANSED, "items")
STAMP = delta.Stamp("test", "cleansed/items")
ORDERS = delta.Stamp("test", "cleansed/orders")


def publish_latest(lake: Lake, table: str) -> None:
    """Publish a table's newest version, as if it passed its checks."""
    snapshot = lake.writable(Layer.CLEANSED, table).snapshot()
    assert snapshot.version is not None
    snapshot.mark(ORDERS, txns={delta.PUBLISHED: snapshot.version})


def published_lake(lake: Lake) -> VerifiedBase:
    """orders o1..o4, products p1..p2, and ten items over them: a version that passed."""
    put_table(lake, "cleansed", "orders", pl.DataFrame({"order_id": ["o1", "o2", "o3", "o4"]}))
    put_table(lake, "cleansed", "products", pl.DataFrame({"product_id": ["p1", "p2"]}))
    version = put_table(
        lake, "cleansed", "items", cleansed_items([f"i{i}" for i in range(10)], ["o1", "o2"] * 5)
    )
    whole = verify(lake, Layer.CLEANSED, "items", version)
    assert whole.passed and not whole.failed
    return base_of(whole, version)


def base_of(verification: Verification, version: int) -> VerifiedBase:
    return VerifiedBase(
        version,
        frozenset(o.check.name for o in verification.outcomes if o.outcome.value == "passed"),
        verification.versions,
    )


def outcomes(verification: Verification) -> dict[str, tuple[str, int | None]]:
    return {o.check.name: (o.outcome.value, o.failing_rows) for o in verification.outcomes}


def both(lake: Lake, version: int, base: VerifiedBase) -> tuple[Verification, Verification]:
    """The incremental and the whole verification of ``version``, against the same inputs."""
    whole = verify(lake, Layer.CLEANSED, "items", version)
    increment = verify_since(
        lake, Layer.CLEANSED, "items", version, base, reference_versions=whole.versions
    )
    assert increment is not None, "expected an incremental verification"
    assert outcomes(increment) == outcomes(whole)
    assert increment.versions == whole.versions
    return increment, whole


APPENDS: dict[str, tuple[Callable[[], pl.DataFrame], set[str]]] = {
    "clean rows": (lambda: cleansed_items(["n1", "n2"], ["o3", "o4"], ["p2", "p1"]), set()),
    "a missing key": (
        lambda: cleansed_items([None, "n2"], ["o3", "o4"]),
        {"order_item_id__missing"},
    ),
    "an order that does not exist": (
        lambda: cleansed_items(["n1", "n2"], ["o3", "o9"]),
        {"order_id__invalid__ref"},
    ),
    "a key the table already holds": (
        lambda: cleansed_items(["n1", "i3"], ["o3", "o4"]),
        {"order_item_id__duplicate"},
    ),
    "a key twice among the new rows": (
        lambda: cleansed_items(["n1", "n1"], ["o3", "o4"]),
        {"order_item_id__duplicate"},
    ),
    "a key the table holds, twice among the new rows": (
        lambda: cleansed_items(["i3", "i3"], ["o3", "o4"]),
        {"order_item_id__duplicate"},
    ),
}


@pytest.mark.parametrize("case", APPENDS)
def test_an_append_is_judged_by_its_rows_as_the_whole_version_is(lake: Lake, case: str) -> None:
    base = published_lake(lake)
    make, failing = APPENDS[case]
    version = lake.writable(Layer.CLEANSED, "items").snapshot().append(make(), STAMP)

    increment, whole = both(lake, version, base)

    assert {o.check.name for o in whole.failed} == failing
    assert "read the 1 file(s) added since" in increment.scope
    assert "(2 of 12 rows)" in increment.scope
    read_added = {o.check.name: o.diagnostics.get("check_rows_tested") for o in increment.outcomes}
    assert read_added["order_item_id__missing"] == 2  # the new rows, not the table
    # a lower bound on the row count that the new rows meet holds on the whole version too
    [row_count] = [o for o in increment.outcomes if o.check.name == "row_count"]
    assert row_count.diagnostics["decided_on"].startswith("the added rows")
    assert row_count.diagnostics["added_rows_check_rows_tested"] == 2
    if "order_item_id__duplicate" in failing:
        [dupes] = [o for o in increment.outcomes if o.check.name == "order_item_id__duplicate"]
        assert {r["order_item_id"] for r in dupes.sample} == (
            {"n1"} if case == "a key twice among the new rows" else {"i3"}
        )


def test_a_key_gone_from_the_referenced_table_sends_its_rule_to_the_whole_version(
    lake: Lake,
) -> None:
    base = published_lake(lake)
    orders = lake.writable(Layer.CLEANSED, "orders").snapshot()
    orders.delete("order_id = 'o1'", ORDERS)
    publish_latest(lake, "orders")
    version = (
        lake.writable(Layer.CLEANSED, "items")
        .snapshot()
        .append(cleansed_items(["n1"], ["o3"]), STAMP)
    )

    increment, whole = both(lake, version, base)

    # five old items name o1: only a read of the whole version finds them
    assert outcomes(whole)["order_id__invalid__ref"] == ("failed", 5)
    assert increment.scope.startswith("10 of 11 checks")


def test_a_rewritten_referenced_table_that_kept_its_keys_still_reads_only_the_new_rows(
    lake: Lake,
) -> None:
    base = published_lake(lake)
    orders = lake.writable(Layer.CLEANSED, "orders").snapshot()
    # a MERGE rewrites the file holding o1..o4: every key comes back in the added file
    orders.merge(
        pl.DataFrame({"order_id": ["o2", "o5"]}),
        ORDERS,
        on=["order_id"],
        update={"order_id": "s.order_id"},
        insert={"order_id": "s.order_id"},
    )
    publish_latest(lake, "orders")
    version = (
        lake.writable(Layer.CLEANSED, "items")
        .snapshot()
        .append(cleansed_items(["n1"], ["o5"]), STAMP)
    )

    increment, whole = both(lake, version, base)

    assert whole.passed
    assert increment.scope.startswith("11 of 11 checks")


def test_a_merge_into_the_table_is_judged_by_the_files_it_wrote(lake: Lake) -> None:
    base = published_lake(lake)
    snapshot = lake.writable(Layer.CLEANSED, "items").snapshot()
    snapshot.merge(
        cleansed_items(["i1", "n1"], ["o9", "o3"]),
        STAMP,
        on=["order_item_id"],
        update={"order_id": "s.order_id"},
        insert={c: f"s.{c}" for c in ITEMS.columns},
    )
    version = delta.current_version(lake.table_uri(Layer.CLEANSED, "items"), lake.storage_options)
    assert version is not None

    _, whole = both(lake, version, base)

    assert outcomes(whole)["order_id__invalid__ref"] == ("failed", 1)
    assert outcomes(whole)["order_item_id__duplicate"] == ("passed", 0)


def test_a_check_that_did_not_pass_on_the_base_reads_the_whole_version(lake: Lake) -> None:
    put_table(lake, "cleansed", "orders", pl.DataFrame({"order_id": ["o1"]}))
    put_table(lake, "cleansed", "products", pl.DataFrame({"product_id": ["p1"]}))
    first = put_table(lake, "cleansed", "items", cleansed_items(["i1", None], ["o1", "o1"]))
    base = base_of(verify(lake, Layer.CLEANSED, "items", first), first)
    assert "order_item_id__missing" not in base.passed
    version = (
        lake.writable(Layer.CLEANSED, "items")
        .snapshot()
        .append(cleansed_items(["n1"], ["o1"]), STAMP)
    )

    increment, _ = both(lake, version, base)

    assert outcomes(increment)["order_item_id__missing"] == ("failed", 1)


def test_a_version_that_added_no_file_is_verified_whole(lake: Lake) -> None:
    base = published_lake(lake)
    snapshot = lake.writable(Layer.CLEANSED, "items").snapshot()
    snapshot.delete("order_item_id IS NOT NULL", STAMP)  # every file removed, none written
    version = base.version + 1
    assert verify_since(lake, Layer.CLEANSED, "items", version, base) is None


def test_judging_a_written_version_reads_only_what_it_added_after_a_stored_verdict(
    lake: Lake,
) -> None:
    """The path cleansing takes: ``publish.judge`` on a version written over a published one."""
    published_lake(lake)
    first = publish.judge(
        lake, Layer.CLEANSED, "items", *_written(lake, cleansed_items(["n1"], ["o3"]))
    )
    assert first.published and first.scope == ""  # no stored verdict yet: whole
    second = publish.judge(
        lake, Layer.CLEANSED, "items", *_written(lake, cleansed_items(["n2"], ["o4"]))
    )
    assert second.published
    assert second.scope.startswith("11 of 11 checks read the 1 file(s) added since")
    rejected = publish.judge(
        lake, Layer.CLEANSED, "items", *_written(lake, cleansed_items(["n2"], ["o4"]))
    )
    assert not rejected.published
    assert [c.name for c in rejected.blocking_failures] == ["order_item_id__duplicate"]
    stored = publish.load_verdict(lake, Layer.CLEANSED, "items")
    assert stored is not None and stored.version == rejected.version and not stored.published


def _written(lake: Lake, rows: pl.DataFrame) -> tuple[int, delta.Stamp]:
    return lake.writable(Layer.CLEANSED, "items").snapshot().append(rows, STAMP), STAMP


# -- a keyed mart an increment rebuilt: judged by its rebuilt rows in dbt's scratch database --
ORDER = "'{id}', '{customer}', 's1', now(), {subtotal}, 1, {subtotal} + 1, 5, 1, 0, true, false, 1"
MART_VERSIONS = {"cleansed/customers": 4, "cleansed/stores": 2}


def scratch_database(
    path: Path,
    kept: list[dict[str, Any]],
    rebuilt: list[dict[str, Any]],
    before: list[dict[str, Any]] | None = None,
) -> Path:
    """A scratch database as an increment leaves it after ``assemble``: marts/orders' kept
    and rebuilt rows, the candidate over both, the cleansed tables it references, and the
    rebuilt customers' rows as published (``before``)."""
    database = path / "scratch.duckdb"
    con = duckdb.connect(str(database))
    contract = load_contract(Layer.MARTS, "orders")
    register_empty(con, contract)
    for row in before or []:
        con.execute(f"INSERT INTO marts.orders VALUES ({ORDER.format(**row)})")
    con.execute("CREATE SCHEMA lakehouse_before")
    con.execute("CREATE TABLE lakehouse_before.orders AS FROM marts.orders")
    con.execute("DROP TABLE marts.orders")
    for part, rows in (("kept", kept), ("rebuilt", rebuilt)):
        register_empty(con, contract)
        for row in rows:
            con.execute(f"INSERT INTO marts.orders VALUES ({ORDER.format(**row)})")
        con.execute(f"ALTER TABLE marts.orders RENAME TO orders__{part}")
    con.execute(
        "CREATE VIEW marts.orders AS SELECT * FROM marts.orders__kept "
        "UNION ALL BY NAME SELECT * FROM marts.orders__rebuilt"
    )
    con.execute("CREATE SCHEMA cleansed")
    con.execute(
        "CREATE TABLE cleansed.customers AS SELECT * FROM (VALUES ('c1'), ('c2')) t(customer_id)"
    )
    con.execute("CREATE TABLE cleansed.stores AS SELECT 's1' AS location_id")
    con.close()
    return database


KEPT = [{"id": f"o{i}", "customer": "c1", "subtotal": 10} for i in range(5)]
REBUILDS: dict[str, tuple[list[dict[str, Any]], set[str]]] = {
    "clean rows": ([{"id": "n1", "customer": "c2", "subtotal": 3}], set()),
    "a negative amount": (
        [{"id": "n1", "customer": "c2", "subtotal": -3}],
        {"subtotal__invalid", "order_total__invalid", "failed_rows__tax"},
    ),
    "a customer cleansed does not hold": (
        [{"id": "n1", "customer": "c9", "subtotal": 3}],
        {"customer_id__invalid__ref"},
    ),
    "an order id a kept row holds": (
        [{"id": "o2", "customer": "c2", "subtotal": 3}],
        {"order_id__duplicate"},
    ),
    "an order of the slice rebuilt, and one a kept row holds": (
        [
            {"id": "b1", "customer": "c2", "subtotal": 4},
            {"id": "o3", "customer": "c2", "subtotal": 3},
        ],
        {"order_id__duplicate"},
    ),
}
BEFORE = [{"id": "b1", "customer": "c2", "subtotal": 2}]
"""The rebuilt customer's order as published: rebuilt again, it repeats no kept key."""


@pytest.mark.parametrize("case", REBUILDS)
def test_a_rebuilt_mart_slice_is_judged_by_its_rows_as_the_whole_candidate_is(
    tmp_path: Path, local_settings: LakehouseSettings, case: str
) -> None:
    rebuilt, failing = REBUILDS[case]
    lake = Lake(local_settings)
    database = scratch_database(tmp_path, KEPT, rebuilt, BEFORE)
    contract = load_contract(Layer.MARTS, "orders")
    # Published: the kept rows and the slice as it was. A duplicate check of the rebuilt
    # rows reads only the published files holding a rebuilt key (the key index), less the
    # slice; with a second, unrelated file, which it never reads.
    con = duckdb.connect(str(database), read_only=True)
    published = con.sql(
        "SELECT * FROM marts.orders__kept UNION ALL SELECT * FROM lakehouse_before.orders"
    ).pl()
    con.close()
    version = put_table(lake, Layer.MARTS, "orders", published)
    unrelated = published.head(1).with_columns(pl.lit("x1").alias("order_id"))
    version = lake.writable(Layer.MARTS, "orders").snapshot().append(unrelated, ORDERS)
    assert version is not None
    base = VerifiedBase(version, frozenset(c.name for c in contract.checks), MART_VERSIONS)
    con = duckdb.connect(str(database), read_only=True)
    try:
        whole = verify_registered(con, contract, MART_VERSIONS)
        with pytest.MonkeyPatch.context() as patch:
            read_files = record_candidates(patch)
            increment = verify_rebuilt(con, database, lake, "orders", MART_VERSIONS, base)
    finally:
        con.close()

    assert increment is not None
    assert outcomes(increment) == outcomes(whole)
    assert {o.check.name for o in whole.failed} == failing
    assert increment.scope == (
        f"15 of 15 checks read the {len(rebuilt)} rows rebuilt for the changes over v{version}"
    )
    read = {o.check.name: o.diagnostics.get("check_rows_tested") for o in increment.outcomes}
    assert read["order_id__missing"] == len(rebuilt)
    # met by the rebuilt rows alone, so by the candidate: not read whole
    [row_count] = [o for o in increment.outcomes if o.check.name == "row_count"]
    assert row_count.diagnostics["added_rows_check_rows_tested"] == len(rebuilt)
    # the file of the kept rows and the slice only, and only where a rebuilt key is in it
    first = lake.published_table(Layer.MARTS, "orders", version - 1)
    assert first is not None
    published_keys = {r["id"] for r in [*KEPT, *BEFORE]}
    holds = any(r["id"] in published_keys for r in rebuilt)
    assert read_files == [sorted(delta.file_paths(first)) if holds else []]


@pytest.mark.parametrize("customer", ["c2", "c9"])
def test_a_rebuilt_slice_reads_only_the_referenced_files_holding_its_values(
    tmp_path: Path,
    local_settings: LakehouseSettings,
    monkeypatch: pytest.MonkeyPatch,
    customer: str,
) -> None:
    """The customers a rebuilt slice names are looked up in the files of the cleansed
    version dbt built from that may hold them, not in every file: the verdict is the same
    (c2 is held, c9 is not)."""
    lake = Lake(local_settings)
    database = scratch_database(tmp_path, KEPT, [{"id": "n1", "customer": customer, "subtotal": 3}])
    put_table(lake, Layer.CLEANSED, "customers", pl.DataFrame({"customer_id": ["c1", "c2"]}))
    first = lake.published_table(Layer.CLEANSED, "customers")
    assert first is not None
    customers = lake.writable(Layer.CLEANSED, "customers").snapshot()
    later = customers.append(pl.DataFrame({"customer_id": ["c7"]}), STAMP)
    assert later is not None
    versions = {**MART_VERSIONS, "cleansed/customers": later}
    contract = load_contract(Layer.MARTS, "orders")
    published = put_table(lake, Layer.MARTS, "orders", pl.DataFrame({"order_id": ["o0"]}))
    base = VerifiedBase(published, frozenset(c.name for c in contract.checks), versions)
    con = duckdb.connect(str(database), read_only=True)
    try:
        whole = verify_registered(con, contract, versions)
        read = record_candidates(monkeypatch, "cleansed/customers")
        increment = verify_rebuilt(con, database, lake, "orders", versions, base)
    finally:
        con.close()

    assert increment is not None
    assert outcomes(increment) == outcomes(whole)
    failing = {o.check.name for o in whole.failed}
    assert failing == (set() if customer == "c2" else {"customer_id__invalid__ref"})
    assert read == [sorted(delta.file_paths(first)) if customer == "c2" else []]


# -- any table a check step verifies (raw too): from the version its stored verdict judged --
def test_a_check_step_verifies_a_new_raw_version_by_the_rows_it_added(built: Lake) -> None:
    stored = publish.load_verdict(built, Layer.RAW, "orders")
    assert stored is not None and stored.version is not None and stored.scope == ""
    raw = built.writable(Layer.RAW, "orders")
    rows = read_version(built, Layer.RAW, "orders").head(3)
    rows = rows.with_columns(
        pl.lit(None, pl.String).alias("_ingest_run_id"),  # breaks a rule
        pl.lit("10OFF").alias("coupon"),  # a column the source gained: older files lack it
    )
    version = raw.snapshot().append(rows, delta.Stamp("test", "raw/orders"), schema_merge=True)

    verdict = publish.current_verdict(built, Layer.RAW, "orders", "test")

    assert verdict is not None and verdict.version == version
    assert verdict.scope.endswith(
        f"added since v{stored.version} (3 of {verdict_rows(built)} rows)"
    )
    whole = verify(built, Layer.RAW, "orders", version)
    assert {c.name: (c.outcome, c.failing_rows) for c in verdict.checks} == {
        o.check.name: (o.outcome.value, o.failing_rows) for o in whole.outcomes
    }
    assert {c.name for c in verdict.checks if c.failed} == {"schema", "_ingest_run_id__missing"}


def read_version(lake: Lake, layer: Layer, table: str) -> pl.DataFrame:
    dt = lake.published_table(layer, table)
    assert dt is not None
    frame = pl.from_arrow(dt.to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def verdict_rows(lake: Lake) -> int:
    dt = lake.writable(Layer.RAW, "orders").open()
    assert dt is not None
    return delta.row_count(dt)


def _items_contract_with(tmp_path: Path, checks: list[dict[str, Any]]) -> Contract:
    """cleansed/items' contract with ``checks`` as its only checks."""
    columns = [{k: v for k, v in c.items() if k != "checks"} for c in ITEMS.doc["columns"]]
    doc = {**ITEMS.doc, "checks": checks, "columns": columns}
    path = tmp_path / "items.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Contract(Layer.CLEANSED, "items", path, doc)


def _whole_and_in_two_parts(
    lake: Lake, contract: Contract, base: int, version: int, *, bound_kept_newest: bool = False
) -> tuple[Verification, Verification, list[str]]:
    """cleansed/items at ``version`` verified whole and in two parts over ``base`` (no
    check judged by row), at 2026-12-04 02:00 UTC; with which rows each part read."""
    now = datetime(2026, 12, 4, 2, tzinfo=UTC)
    new = lake.published_table(Layer.CLEANSED, "items", version)
    old = lake.published_table(Layer.CLEANSED, "items", base)
    assert new is not None and old is not None
    kept = delta.file_paths(new) & delta.file_paths(old)
    seen: list[str] = []
    con = duckdb.connect()
    try:
        versions = register_inputs(con, lake, contract, version)
        whole = verify_registered(con, contract, versions, now=now)

        def show(files: set[str] | None) -> duckdb.DuckDBPyConnection:
            seen.append("added" if files else "whole")
            delta.duckdb_view(con, "cleansed.items", new, files)
            return con

        increment = verify_in_two_parts(
            con,
            contract,
            versions,
            [],
            show_added=lambda: show(delta.file_paths(new) - kept),
            show_whole=lambda: show(None),
            kept_newest=(lambda c: delta.newest(new, c, kept)) if bound_kept_newest else None,
            kept=None,
            scope="the new rows",
            now=now,
        )
    finally:
        con.close()
    return whole, increment, seen


def test_a_lower_bound_or_freshness_the_new_rows_miss_is_read_on_the_whole_version(
    lake: Lake, tmp_path: Path
) -> None:
    """Row count and freshness are decided by the added rows only when they pass there (a
    table holding more rows, or newer ones, passes too); otherwise the whole version
    decides, as a whole verification would."""
    base = published_lake(lake)  # ten rows ingested 2026-12-01
    fresh = cleansed_items(["n1", "n2"], ["o3", "o4"]).with_columns(
        pl.lit(datetime(2026, 12, 3, tzinfo=UTC)).alias("_ingested_at")
    )
    version = lake.writable(Layer.CLEANSED, "items").snapshot().append(fresh, STAMP)
    freshness = {"column": "_ingested_at", "now_variable": "NOW"}
    contract = _items_contract_with(
        tmp_path,
        [
            {"schema": {}},
            {"row_count": {"threshold": {"must_be_greater_than": 5}}},  # 2 new rows: no
            {  # the new rows are a day old at NOW: yes
                "freshness": {**freshness, "threshold": {"unit": "hour", "must_be_less_than": 30}}
            },
            {  # the old rows are 50 hours old: the new ones pass, so does the whole
                "freshness": {
                    **freshness,
                    "qualifier": "stale",
                    "threshold": {"unit": "hour", "must_be_less_than": 10},
                }
            },
        ],
    )
    whole, increment, seen = _whole_and_in_two_parts(lake, contract, base.version, version)

    assert outcomes(increment) == outcomes(whole)
    assert outcomes(whole) == {
        "schema": ("passed", None),
        "row_count": ("passed", None),
        "freshness": ("passed", None),
        "freshness__stale": ("failed", None),
    }
    by_name = {o.check.name: o for o in increment.outcomes}
    assert by_name["row_count"].diagnostics["check_rows_tested"] == 12  # read whole
    assert "decided_on" not in by_name["freshness__stale"].diagnostics  # read whole
    assert by_name["freshness"].diagnostics["decided_on"].startswith("the added rows")
    assert by_name["schema"].diagnostics["decided_on"].startswith("the added rows")
    assert seen == ["added", "whole"]
    assert increment.scope == "2 of 4 checks read the new rows"


@pytest.mark.parametrize(
    ("delivered", "check_filter", "read"),
    [
        (datetime(2026, 12, 3, tzinfo=UTC), None, ["added"]),  # newer than every kept row
        (datetime(2026, 11, 30, tzinfo=UTC), None, ["added", "whole"]),  # late and older
        # filtered: the newest value it measures may be a kept row's whatever the bound
        (datetime(2026, 12, 3, tzinfo=UTC), "order_id <> 'o3'", ["added", "whole"]),
    ],
)
def test_freshness_the_new_rows_miss_is_theirs_when_they_hold_the_newest_value(
    lake: Lake, tmp_path: Path, delivered: datetime, check_filter: str | None, read: list[str]
) -> None:
    """A freshness check the added rows fail is decided on them when the kept rows'
    newest value (bounded by the Delta statistics) is older than theirs: the whole table's
    newest value is the added rows'. A delivery older than the kept rows reads the whole
    version, as does a filtered check. Either way the verdict is the whole verification's."""
    base = published_lake(lake)  # ten rows ingested 2026-12-01
    late = cleansed_items(["n1", "n2"], ["o3", "o4"]).with_columns(
        pl.lit(delivered).alias("_ingested_at")
    )
    version = lake.writable(Layer.CLEANSED, "items").snapshot().append(late, STAMP)
    stale: dict[str, Any] = {"column": "_ingested_at", "now_variable": "NOW", "qualifier": "stale"}
    if check_filter is not None:
        stale["filter"] = check_filter
    contract = _items_contract_with(
        tmp_path, [{"freshness": {**stale, "threshold": {"unit": "hour", "must_be_less_than": 10}}}]
    )
    whole, increment, seen = _whole_and_in_two_parts(
        lake, contract, base.version, version, bound_kept_newest=True
    )

    assert outcomes(increment) == outcomes(whole) == {"freshness__stale": ("failed", None)}
    assert seen == read
    [outcome] = increment.outcomes
    if read == ["added"]:
        assert outcome.diagnostics["decided_on"] == (
            "the added rows (they hold the table's newest value)"
        )
    else:
        assert "decided_on" not in outcome.diagnostics


def cleansed_orders(ids: list[str], at: datetime) -> pl.DataFrame:
    """Rows of cleansed/orders exactly as its contract declares the columns."""
    n = len(ids)
    contract = load_contract(Layer.CLEANSED, "orders")
    return pl.DataFrame(
        {
            "order_id": ids,
            "customer_id": ["c1"] * n,
            "ordered_at": [at] * n,
            "location_id": ["s1"] * n,
            "subtotal": [Decimal("10.00")] * n,
            "tax_paid": [Decimal("1.00")] * n,
            "order_total": [Decimal("11.00")] * n,
            "_source_file_uri": ["landing/orders/day.csv"] * n,
            "_source_file_fingerprint": ["f"] * n,
            "_source_row_number": list(range(n)),
            "_ingested_at": [at] * n,
            "_ingest_run_id": ["run"] * n,
            "_row_hash": [f"h{i}" for i in ids],
        },
        schema=contract.polars_schema(),
    )


@pytest.mark.parametrize("future", [False, True], ids=["today", "next year"])
def test_the_rule_against_future_rows_reads_only_the_new_rows(lake: Lake, future: bool) -> None:
    """A row not dated after ``NOW`` at one verification is not at a later one, so the
    rule reads the appended rows alone, and finds a future row among them as a whole
    verification does."""
    put_table(lake, "cleansed", "customers", pl.DataFrame({"customer_id": ["c1"]}))
    put_table(lake, "cleansed", "stores", pl.DataFrame({"location_id": ["s1"]}))
    past = datetime(2026, 11, 1, tzinfo=UTC)
    first = put_table(lake, "cleansed", "orders", cleansed_orders(["o1", "o2"], past))
    base = base_of(verify(lake, Layer.CLEANSED, "orders", first), first)
    assert "failed_rows__future" in base.passed
    when = datetime(2099, 1, 1, tzinfo=UTC) if future else past
    appended = cleansed_orders(["o3"], when)
    version = lake.writable(Layer.CLEANSED, "orders").snapshot().append(appended, ORDERS)

    whole = verify(lake, Layer.CLEANSED, "orders", version)
    increment = verify_since(
        lake, Layer.CLEANSED, "orders", version, base, reference_versions=whole.versions
    )

    assert increment is not None
    assert outcomes(increment) == outcomes(whole)
    assert outcomes(whole)["failed_rows__future"] == ("failed" if future else "passed", int(future))
    read = {o.check.name: o.diagnostics.get("check_rows_tested") for o in increment.outcomes}
    assert read["failed_rows__future"] == 1  # the appended row, not the table
    assert increment.scope.startswith(f"{len(whole.outcomes)} of {len(whole.outcomes)} checks")


def test_a_referential_rule_on_new_rows_reads_only_the_referenced_files_holding_their_values(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = published_lake(lake)  # orders o1..o4 in one file
    orders = lake.writable(Layer.CLEANSED, "orders").snapshot()
    before = delta.file_paths(orders.dt) if orders.dt is not None else set()
    orders.append(pl.DataFrame({"order_id": ["o5"]}), ORDERS)
    publish_latest(lake, "orders")
    published = lake.published_table(Layer.CLEANSED, "orders")
    assert published is not None
    [second] = delta.file_paths(published) - before
    version = (
        lake.writable(Layer.CLEANSED, "items")
        .snapshot()
        .append(cleansed_items(["n1", "n2"], ["o5", "o9"]), STAMP)
    )
    read = record_candidates(monkeypatch, "cleansed/orders")
    _, whole = both(lake, version, base)  # equal outcomes asserted there

    assert outcomes(whole)["order_id__invalid__ref"] == ("failed", 1)  # o9
    assert read == [[second]]  # o5's file alone, not o1..o4's
