"""The seven Jaffle Shop sources: what lands, and what each becomes once cleansed.

This is the one place that says which columns a source must deliver, how they are
renamed (as dbt Labs' jaffle-shop staging layer does), which parsing rule turns each
landed string into a value, and which columns form the business key. The cleansed
types themselves are declared once, in the table's Soda contract
(``soda_checks/cleansed/<table>.yml``), and the cleansing step casts to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl


class Kind(StrEnum):
    """How a landed (string) value becomes a typed cleansed value."""

    TEXT = "text"
    ID = "id"  # text that must be present
    TIMESTAMP = "timestamp"
    CENTS = "cents"  # integer cents -> dollars, must be >= 0
    RATE = "rate"  # a fraction such as a tax rate, 0 <= x < 1
    BOOLEAN = "boolean"
    PII_NAME = "pii_name"  # becomes <name>_pseudonym and <name>_masked, never in clear


@dataclass(frozen=True)
class Column:
    """One landed column and the cleansed column it becomes."""

    landed: str
    cleansed: str
    kind: Kind
    description: str
    """What a value means, without its form: ``lakehouse.columns`` adds how each layer
    holds it (cents as text in raw, dollars in cleansed, a pseudonym for a name)."""
    required: bool = True


@dataclass(frozen=True)
class Source:
    """A landed source and the cleansed table built from it."""

    name: str
    jafgen_file: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    description: str
    derived: dict[str, pl.Expr] = field(default_factory=dict)
    derived_descriptions: dict[str, str] = field(default_factory=dict)
    """What each ``derived`` column means, beside the expression that computes it."""

    @property
    def landed_columns(self) -> list[str]:
        return [c.landed for c in self.columns]

    @property
    def required_landed_columns(self) -> list[str]:
        return [c.landed for c in self.columns if c.required]


def _c(landed: str, cleansed: str, kind: Kind, description: str, required: bool = True) -> Column:
    return Column(landed, cleansed, kind, description, required)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="customers",
            jafgen_file="raw_customers.csv",
            columns=(
                _c("id", "customer_id", Kind.ID, "The customer's identifier"),
                _c("name", "customer_name", Kind.PII_NAME, "The customer's full name"),
            ),
            key=("customer_id",),
            description="People who have ordered, or may order. Names are pseudonymized.",
        ),
        Source(
            name="orders",
            jafgen_file="raw_orders.csv",
            columns=(
                _c("id", "order_id", Kind.ID, "The order's identifier"),
                _c("customer", "customer_id", Kind.ID, "The customer who placed the order"),
                _c("ordered_at", "ordered_at", Kind.TIMESTAMP, "When the order was placed"),
                _c("store_id", "location_id", Kind.ID, "The shop the order was placed at"),
                _c("subtotal", "subtotal", Kind.CENTS, "The order's amount before tax"),
                _c("tax_paid", "tax_paid", Kind.CENTS, "The tax charged on the order"),
                _c(
                    "order_total",
                    "order_total",
                    Kind.CENTS,
                    "The order's amount including tax (subtotal plus tax paid)",
                ),
            ),
            key=("order_id",),
            description="One row per order, amounts in dollars.",
        ),
        Source(
            name="items",
            jafgen_file="raw_items.csv",
            columns=(
                _c("id", "order_item_id", Kind.ID, "The order item's identifier"),
                _c("order_id", "order_id", Kind.ID, "The order the item is on"),
                _c("sku", "product_id", Kind.ID, "The product ordered (its SKU)"),
            ),
            key=("order_item_id",),
            description="One row per product on an order.",
        ),
        Source(
            name="products",
            jafgen_file="raw_products.csv",
            columns=(
                _c("sku", "product_id", Kind.ID, "The product's identifier (its SKU)"),
                _c("name", "product_name", Kind.TEXT, "The product's name on the menu"),
                _c("type", "product_type", Kind.TEXT, "The kind of product, jaffle or beverage"),
                _c("price", "product_price", Kind.CENTS, "The price one of the product sells for"),
                _c(
                    "description",
                    "product_description",
                    Kind.TEXT,
                    "The menu's description of the product, if any",
                    required=False,
                ),
            ),
            key=("product_id",),
            description="The menu: jaffles and beverages, prices in dollars.",
            derived={
                "is_food_item": pl.col("product_type") == "jaffle",
                "is_drink_item": pl.col("product_type") == "beverage",
            },
            derived_descriptions={
                "is_food_item": "True when the product is a jaffle (its type is 'jaffle').",
                "is_drink_item": "True when the product is a beverage (its type is 'beverage').",
            },
        ),
        Source(
            name="stores",
            jafgen_file="raw_stores.csv",
            columns=(
                _c("id", "location_id", Kind.ID, "The shop location's identifier"),
                _c("name", "location_name", Kind.TEXT, "The shop location's name"),
                _c("opened_at", "opened_at", Kind.TIMESTAMP, "When the shop opened"),
                _c("tax_rate", "tax_rate", Kind.RATE, "The sales tax rate charged at the shop"),
            ),
            key=("location_id",),
            description="Shop locations and their tax rates.",
        ),
        Source(
            name="supplies",
            jafgen_file="raw_supplies.csv",
            columns=(
                _c("id", "supply_id", Kind.ID, "The supply's identifier"),
                _c("name", "supply_name", Kind.TEXT, "The supply's name"),
                _c("cost", "supply_cost", Kind.CENTS, "What the supply costs per product made"),
                _c(
                    "perishable",
                    "is_perishable_supply",
                    Kind.BOOLEAN,
                    "Whether the supply is perishable",
                ),
                _c("sku", "product_id", Kind.ID, "The product that consumes the supply"),
            ),
            # A supply id repeats across the products that use it.
            key=("supply_id", "product_id"),
            description="What each product consumes, costs in dollars.",
        ),
        Source(
            name="tweets",
            jafgen_file="raw_tweets.csv",
            columns=(
                _c("id", "tweet_id", Kind.ID, "The tweet's identifier"),
                _c("user_id", "customer_id", Kind.ID, "The customer who tweeted"),
                _c("tweeted_at", "tweeted_at", Kind.TIMESTAMP, "When the tweet was posted"),
                _c(
                    "content",
                    "content",
                    Kind.TEXT,
                    "What the tweet said, if anything",
                    required=False,
                ),
            ),
            key=("tweet_id",),
            description="What customers said about the shop.",
        ),
    )
}

# Ingestion columns every raw row carries, next to its values as landed.
SOURCE_FILE_URI = "_source_file_uri"
SOURCE_FILE_FINGERPRINT = "_source_file_fingerprint"
SOURCE_ROW_NUMBER = "_source_row_number"
INGESTED_AT = "_ingested_at"
INGEST_RUN_ID = "_ingest_run_id"
LINEAGE_COLUMNS: tuple[str, ...] = (
    SOURCE_FILE_URI,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_ROW_NUMBER,
    INGESTED_AT,
    INGEST_RUN_ID,
)
"""Raw lineage columns, carried unchanged into cleansed and quarantine rows."""

ROW_HASH = "_row_hash"
"""Hash of a cleansed row's business values: a re-delivered identical row changes nothing."""

QUARANTINE_REASON = "_quarantine_reason"
QUARANTINE_RUN_ID = "_quarantine_run_id"


def cleansed_value_columns(source: Source) -> list[str]:
    """Business columns of the cleansed table, in order (PII names expanded)."""
    out: list[str] = []
    for col in source.columns:
        if col.kind is Kind.PII_NAME:
            out += [f"{col.cleansed}_pseudonym", f"{col.cleansed}_masked"]
        else:
            out.append(col.cleansed)
    out += list(source.derived)
    return out
