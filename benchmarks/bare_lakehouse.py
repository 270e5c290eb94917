"""The baseline: the same raw, cleansed and mart Delta tables from the same CSV files,
with nothing but polars and deltalake in one process.

Why: the lakehouse's overhead (Dagster, dbt, Soda, write-audit-publish, quarantine,
exactly-once bookkeeping) is only worth its cost if that cost is a bounded multiple of
the work itself. This script is the work itself, written the plain way: read each file,
keep it as strings with where it came from (raw), type, trim and deduplicate it with the
keyed pseudonym for names (cleansed), compute the seven marts with the semantics of the
dbt models in ``dbt/models/marts`` (marts), and write each as one Delta table. No
checks, no quarantine, no lineage, no increments: a fresh build of clean data, which is
what ``benchmarks/scale.py`` compares it with (and asserts the marts equal).

    .venv/bin/python benchmarks/bare_lakehouse.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from lakehouse.delta import WRITER_PROPERTIES
from lakehouse.pii import mask, pseudonym
from lakehouse.settings import LakehouseSettings

KEYS = {
    "customers": ["id"],
    "orders": ["id"],
    "items": ["id"],
    "products": ["sku"],
    "stores": ["id"],
    "supplies": ["id", "sku"],
    "tweets": ["id"],
}
MART_KEYS = {
    "orders": ["order_id"],
    "order_items": ["order_item_id"],
    "customers": ["customer_id"],
    "products": ["product_id"],
    "locations": ["location_id"],
    "supplies": ["supply_id", "product_id"],
    "daily_location_revenue": ["location_id", "order_date"],
}
DOLLARS = pl.Decimal(18, 2)


def _write(df: pl.DataFrame, uri: Path) -> None:
    # The lake's file encoding (Zstandard), so the comparison is of the work, not codecs.
    write_deltalake(str(uri), df.to_arrow(), mode="overwrite", writer_properties=WRITER_PROPERTIES)


def _text(name: str) -> pl.Expr:
    """A landed value as cleansing reads it: trimmed, and empty means missing."""
    value = pl.col(name).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value).alias(name)


def _dollars(name: str) -> pl.Expr:
    # as the project converts cents: times 0.01, exact and cheaper than dividing by 100
    cents = _text(name).cast(pl.Int64).cast(pl.Decimal(38, 0))
    return (cents * pl.lit(Decimal("0.01"), pl.Decimal(3, 2))).cast(DOLLARS)


def _utc(name: str) -> pl.Expr:
    return (
        _text(name)
        .str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.f")
        .dt.replace_time_zone("UTC")
    )


def raw(data: Path, out: Path, now: datetime) -> dict[str, pl.DataFrame]:
    """Every landed row as strings, with file, row number and load time; written to raw/."""
    tables = {}
    for source in KEYS:
        path = data / f"raw_{source}.csv"
        df = pl.read_csv(path, infer_schema=False).with_columns(
            pl.lit(str(path)).alias("_source_file_uri"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_source_row_number"),
            pl.lit(now).alias("_ingested_at"),
        )
        _write(df, out / "raw" / source)
        tables[source] = df
    return tables


def cleansed(raw_tables: dict[str, pl.DataFrame], out: Path, key: bytes) -> dict[str, pl.DataFrame]:
    """Typed, trimmed, one row per key (the last delivered wins); written to cleansed/."""

    def latest(source: str) -> pl.DataFrame:
        df = raw_tables[source]
        return df.with_columns(_text(k) for k in KEYS[source]).unique(
            KEYS[source], keep="last", maintain_order=True
        )

    customers = latest("customers")
    names = customers["name"].str.strip_chars().to_list()
    tables = {
        "customers": customers.select(
            _text("id").alias("customer_id"),
            pl.Series("customer_name_pseudonym", [pseudonym(n, key) for n in names]),
            pl.Series("customer_name_masked", [mask(n) for n in names]),
        ),
        "orders": latest("orders").select(
            _text("id").alias("order_id"),
            _text("customer").alias("customer_id"),
            _utc("ordered_at").alias("ordered_at"),
            _text("store_id").alias("location_id"),
            _dollars("subtotal").alias("subtotal"),
            _dollars("tax_paid").alias("tax_paid"),
            _dollars("order_total").alias("order_total"),
        ),
        "items": latest("items").select(
            _text("id").alias("order_item_id"),
            _text("order_id").alias("order_id"),
            _text("sku").alias("product_id"),
        ),
        "products": latest("products").select(
            _text("sku").alias("product_id"),
            _text("name").alias("product_name"),
            _text("type").alias("product_type"),
            _dollars("price").alias("product_price"),
            _text("description").alias("product_description"),
            (_text("type") == "jaffle").alias("is_food_item"),
            (_text("type") == "beverage").alias("is_drink_item"),
        ),
        "stores": latest("stores").select(
            _text("id").alias("location_id"),
            _text("name").alias("location_name"),
            _utc("opened_at").alias("opened_at"),
            _text("tax_rate").cast(pl.Decimal(10, 4)).alias("tax_rate"),
        ),
        "supplies": latest("supplies").select(
            _text("id").alias("supply_id"),
            _text("name").alias("supply_name"),
            _dollars("cost").alias("supply_cost"),
            (_text("perishable").str.to_lowercase() == "true").alias("is_perishable_supply"),
            _text("sku").alias("product_id"),
        ),
        "tweets": latest("tweets").select(
            _text("id").alias("tweet_id"),
            _text("user_id").alias("customer_id"),
            _utc("tweeted_at").alias("tweeted_at"),
            _text("content").alias("content"),
        ),
    }
    for name, df in tables.items():
        _write(df, out / "cleansed" / name)
    return tables


def marts(c: dict[str, pl.DataFrame], out: Path) -> dict[str, pl.DataFrame]:
    """The seven marts, as dbt/models/marts/*.sql define them; written to marts/."""
    supply_costs = c["supplies"].group_by("product_id").agg(pl.col("supply_cost").sum())
    order_items = (
        c["items"]
        .join(c["orders"].select("order_id", "ordered_at"), on="order_id", how="left")
        .join(
            c["products"].select("product_id", "product_price", "is_food_item", "is_drink_item"),
            on="product_id",
            how="left",
        )
        .join(supply_costs, on="product_id", how="left")
        .select(
            "order_item_id",
            "order_id",
            "product_id",
            "ordered_at",
            "product_price",
            pl.col("supply_cost").fill_null(0).cast(DOLLARS),
            pl.col("is_food_item").fill_null(False),
            pl.col("is_drink_item").fill_null(False),
        )
    )
    summary = order_items.group_by("order_id").agg(
        pl.col("supply_cost").sum().alias("order_cost"),
        pl.col("is_food_item").sum().alias("count_food_items"),
        pl.col("is_drink_item").sum().alias("count_drink_items"),
    )
    orders = (
        c["orders"]
        .join(summary, on="order_id", how="left")
        .with_columns(
            pl.col("order_cost").fill_null(0).cast(DOLLARS),
            pl.col("count_food_items").fill_null(0),
            pl.col("count_drink_items").fill_null(0),
        )
        .with_columns(
            (pl.col("count_food_items") > 0).alias("is_food_order"),
            (pl.col("count_drink_items") > 0).alias("is_drink_order"),
        )
        .sort("customer_id", "ordered_at", "order_id")
        .with_columns(
            pl.int_range(1, pl.len() + 1).over("customer_id").alias("customer_order_number")
        )
    )
    per_customer = orders.group_by("customer_id").agg(
        pl.len().alias("count_lifetime_orders"),
        pl.col("ordered_at").min().alias("first_ordered_at"),
        pl.col("ordered_at").max().alias("last_ordered_at"),
        pl.col("subtotal").sum().alias("lifetime_spend_pretax"),
        pl.col("tax_paid").sum().alias("lifetime_tax_paid"),
        pl.col("order_total").sum().alias("lifetime_spend"),
    )
    tweets = c["tweets"].group_by("customer_id").agg(pl.len().alias("count_lifetime_tweets"))
    customers = (
        c["customers"]
        .join(per_customer, on="customer_id", how="left")
        .join(tweets, on="customer_id", how="left")
        .with_columns(
            pl.col("count_lifetime_orders").fill_null(0),
            *(
                pl.col(n).fill_null(0).cast(DOLLARS)
                for n in ("lifetime_spend_pretax", "lifetime_tax_paid", "lifetime_spend")
            ),
            pl.col("count_lifetime_tweets").fill_null(0),
        )
        .with_columns(
            pl.when(pl.col("count_lifetime_orders") > 1)
            .then(pl.lit("returning"))
            .otherwise(pl.lit("new"))
            .alias("customer_type")
        )
    )
    daily = orders.group_by("location_id", pl.col("ordered_at").dt.date().alias("order_date")).agg(
        pl.len().alias("order_count"),
        pl.col("subtotal").sum().cast(DOLLARS).alias("revenue_pretax"),
        pl.col("order_total").sum().cast(DOLLARS).alias("revenue_total"),
        pl.col("is_food_order").sum().alias("food_order_count"),
        pl.col("is_drink_order").sum().alias("drink_order_count"),
    )
    built = {
        "order_items": order_items,
        "orders": orders,
        "customers": customers,
        "daily_location_revenue": daily,
        "locations": c["stores"].select("location_id", "location_name", "tax_rate", "opened_at"),
        "products": c["products"],
        "supplies": c["supplies"].select(
            "supply_id", "product_id", "supply_name", "supply_cost", "is_perishable_supply"
        ),
    }
    for name, df in built.items():
        _write(df, out / "marts" / name)
    return built


def differences(ours: Path, bare: Path) -> list[str]:
    """Where the marts under two lake roots differ (empty: equal row by row, in the first
    root's types). The pipeline's marts are read at their latest version, which its build
    published."""
    from deltalake import DeltaTable

    problems = []
    for mart, keys in MART_KEYS.items():
        a = pl.DataFrame(DeltaTable(str(ours / "marts" / mart)).to_pyarrow_table())
        b = pl.DataFrame(DeltaTable(str(bare / "marts" / mart)).to_pyarrow_table())
        if set(a.columns) != set(b.columns):
            problems.append(f"{mart}: columns {sorted(set(a.columns) ^ set(b.columns))}")
            continue
        a = a.sort(keys)
        b = b.select(a.columns).cast(dict(a.schema)).sort(keys)
        if a.shape != b.shape:
            problems.append(f"{mart}: {a.height} rows against {b.height}")
            continue
        problems += [f"{mart}.{c}: values differ" for c in a.columns if not a[c].equals(b[c])]
    return problems


def build(data: Path, out: Path) -> None:
    """The three layers in turn, each phase's seconds printed (``phase <layer> <s> s``):
    ``benchmarks/scale.py`` sets them beside the project's layers."""
    shutil.rmtree(out, ignore_errors=True)
    key = LakehouseSettings().pii_key()
    started = time.perf_counter()

    def phase(layer: str) -> None:
        nonlocal started
        print(f"phase {layer} {time.perf_counter() - started:.2f} s", flush=True)
        started = time.perf_counter()

    raw_tables = raw(data, out, datetime.now(UTC))
    phase("raw")
    cleansed_tables = cleansed(raw_tables, out, key)
    phase("cleansed")
    marts(cleansed_tables, out)
    phase("marts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder of raw_<source>.csv files")
    parser.add_argument("out", type=Path, help="where raw/, cleansed/ and marts/ are written")
    args = parser.parse_args()
    build(args.data, args.out)


if __name__ == "__main__":
    main()
