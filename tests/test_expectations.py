"""Row rules judge a small batch against only the referenced files that may hold its
values, and reach the verdict a read of the whole referenced table reaches; the batches
after it read every file again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from lakehouse import delta, expectations
from lakehouse.contracts import load_contract
from lakehouse.expectations import Judgement, RowJudge
from lakehouse.storage import Lake, Layer
from tests.conftest import cleansed_items, put_table, record_candidates

ITEMS = load_contract(Layer.CLEANSED, "items")
NOW = datetime(2026, 12, 5, tzinfo=UTC)


def verdicts(judgement: Judgement) -> dict[str, Any]:
    return {
        "passed": sorted(judgement.passed["order_item_id"].to_list()),
        "quarantined": sorted(judgement.quarantined["order_item_id"].to_list()),
        "violations": sorted((v.rule, v.rows) for v in judgement.violations),
    }


def published_orders(lake: Lake) -> DeltaTable:
    dt = lake.published_table(Layer.CLEANSED, "orders")
    assert dt is not None
    return dt


@pytest.fixture
def two_files(lake: Lake) -> list[str]:
    """cleansed/orders in two files, o1 and o2 in the first and o3 in the second; and
    cleansed/products. Returns the orders' files, oldest first."""
    put_table(lake, "cleansed", "products", pl.DataFrame({"product_id": ["p1"]}))
    put_table(lake, "cleansed", "orders", pl.DataFrame({"order_id": ["o1", "o2"]}))
    first = delta.file_paths(published_orders(lake))
    stamp = delta.Stamp("test", "cleansed/orders")
    lake.writable(Layer.CLEANSED, "orders").snapshot().append(
        pl.DataFrame({"order_id": ["o3"]}), stamp
    )
    snapshot = lake.writable(Layer.CLEANSED, "orders").snapshot()
    snapshot.mark(stamp, txns={delta.PUBLISHED: snapshot.version})
    every = delta.file_paths(published_orders(lake))
    return [*sorted(first), *sorted(every - first)]


def test_a_small_batch_reads_only_the_referenced_files_that_may_hold_its_values(
    lake: Lake, two_files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    read = record_candidates(monkeypatch, "cleansed/orders")
    batch = cleansed_items(["i1", "i2"], ["o3", "o9"])  # o9 is in no order file
    with RowJudge(lake, ITEMS, NOW) as judging:
        narrowed = judging.judge(batch)
        # a second batch reads every file again: o1 is in the first file, not read above
        later = judging.judge(cleansed_items(["i3"], ["o1"]))
    monkeypatch.setattr(expectations, "SMALL_BATCH_ROWS", 0)
    with RowJudge(lake, ITEMS, NOW) as judging:
        whole = judging.judge(batch)

    assert read == [[two_files[1]]]  # the first batch's orders: the second file alone
    assert verdicts(narrowed) == verdicts(whole)
    assert verdicts(narrowed)["quarantined"] == ["i2"]
    assert verdicts(later) == {"passed": ["i3"], "quarantined": [], "violations": []}


def test_a_reference_rule_as_an_anti_join_selects_the_rows_its_predicate_does() -> None:
    """The anti join a check of references is judged with (``failing_row_ids_query``) sets
    aside exactly the rows ``failing_predicate`` selects, nulls on either side included;
    a check that also bounds its values keeps the predicate."""
    import duckdb

    from lakehouse.contracts import CheckRef, failing_predicate, failing_row_ids_query

    items = load_contract(Layer.CLEANSED, "items")
    [reference] = [c for c in items.checks if c.name == "order_id__invalid__ref"]
    now = datetime.now(UTC)
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cleansed")
    con.execute(
        "CREATE TABLE cleansed.orders AS SELECT * FROM (VALUES ('o1'), ('o2'), (NULL)) t(order_id)"
    )
    con.execute(
        "CREATE TABLE cleansed.items AS SELECT * FROM "
        "(VALUES (0, 'o1'), (1, 'o3'), (2, NULL), (3, 'o2'), (4, 'o4'), (5, 'o3')) t(__row, order_id)"
    )
    query = failing_row_ids_query(reference, "cleansed.items", "__row", now)
    assert query is not None and "ANTI JOIN" in query
    by_join = sorted(r[0] for r in con.execute(query).fetchall())
    by_predicate = sorted(
        r[0]
        for r in con.execute(
            f"SELECT __row FROM cleansed.items WHERE {failing_predicate(reference, now)}"
        ).fetchall()
    )
    assert by_join == by_predicate == [1, 4, 5]

    bounded = CheckRef(
        "invalid",
        "order_id",
        body={**reference.body, "valid_values": ["o1", "o2", "o3"]},
        layer=reference.layer,
    )
    query = failing_row_ids_query(bounded, "cleansed.items", "__row", now)
    assert query is not None and "ANTI JOIN" not in query
    assert sorted(r[0] for r in con.execute(query).fetchall()) == [1, 4, 5]
