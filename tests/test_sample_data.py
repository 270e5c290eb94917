"""The built-in generator writes what jafgen writes, consistently, and scales.

The pipeline is tested on the built-in generator's files, so these tests are what makes
that stand in for real jafgen output: same headers and value formats (checked against a
real ``jafgen`` run), and data that hangs together the way the marts assume.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from lakehouse.sample_data import JAFGEN_HEADERS, SOURCE_NAMES, generate_sample, run_jafgen

Rows = list[dict[str, str]]

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"
CENTS = r"\d+"
# One pattern per column: what jafgen 0.4.14 writes there.
FORMATS: dict[str, dict[str, str]] = {
    "customers": {"id": UUID, "name": r"\S+( \S+)+"},
    "orders": {
        "id": UUID,
        "customer": UUID,
        "ordered_at": TIMESTAMP,
        "store_id": UUID,
        "subtotal": CENTS,
        "tax_paid": CENTS,
        "order_total": CENTS,
    },
    "items": {"id": UUID, "order_id": UUID, "sku": r"(JAF|BEV)-\d{3}"},
    "products": {
        "sku": r"(JAF|BEV)-\d{3}",
        "name": r".+",
        "type": r"jaffle|beverage",
        "price": r"\d+00",
        "description": r".+",
    },
    "stores": {"id": UUID, "name": r".+", "opened_at": TIMESTAMP, "tax_rate": r"0\.\d+"},
    "supplies": {
        "id": r"SUP-\d{3}",
        "name": r".+",
        "cost": CENTS,
        "perishable": r"True|False",
        "sku": r"(JAF|BEV)-\d{3}",
    },
    "tweets": {"id": UUID, "user_id": UUID, "tweeted_at": TIMESTAMP + r"\.\d{6}", "content": r".+"},
}


def read(path: Path, limit: int | None = None) -> Rows:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return [row for i, row in enumerate(reader) if limit is None or i < limit]


def header_line(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.readline()


def off_format(rows: Rows, source: str) -> list[tuple[str, str]]:
    """(column, value) pairs that do not match the column's jafgen format."""
    return [
        (column, row[column])
        for row in rows
        for column, pattern in FORMATS[source].items()
        if not re.fullmatch(pattern, row[column])
    ]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_sample(tmp_path_factory.mktemp("sample"), days=60, scale=0.3, seed=3)


@pytest.fixture(scope="module")
def tables(sample: dict[str, Path]) -> dict[str, Rows]:
    return {name: read(path) for name, path in sample.items()}


def test_headers_and_value_formats_match_a_real_jafgen_run(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    real = run_jafgen(tmp_path, years=1)
    assert set(real) == set(sample) == set(SOURCE_NAMES)
    for name in SOURCE_NAMES:
        # Byte for byte, line end included (jafgen writes with Python's csv: CRLF).
        assert header_line(sample[name]) == header_line(real[name]), name
        assert header_line(real[name]) == ",".join(JAFGEN_HEADERS[name]).encode() + b"\r\n"
        # The patterns describe jafgen's output, and the built-in output follows them.
        assert off_format(read(real[name], limit=500), name) == [], f"jafgen {name}"
        assert off_format(read(sample[name]), name) == [], f"built-in {name}"
    same_menu = {p["sku"]: p["type"] for p in read(real["products"])}
    assert {p["sku"]: p["type"] for p in read(sample["products"])} == same_menu
    assert len(read(sample["stores"])) == len(read(real["stores"])) == 6


def test_the_same_seed_gives_the_same_files(sample: dict[str, Path], tmp_path: Path) -> None:
    again = generate_sample(tmp_path / "again", days=60, scale=0.3, seed=3)
    for name in SOURCE_NAMES:
        assert again[name].read_bytes() == sample[name].read_bytes(), name
    other = generate_sample(tmp_path / "other", days=60, scale=0.3, seed=4)
    assert other["orders"].read_bytes() != sample["orders"].read_bytes()
    assert other["customers"].read_bytes() != sample["customers"].read_bytes()


def test_every_reference_resolves(tables: dict[str, Rows]) -> None:
    customers = {c["id"] for c in tables["customers"]}
    stores = {s["id"]: s for s in tables["stores"]}
    products = {p["sku"] for p in tables["products"]}
    orders = {o["id"]: o for o in tables["orders"]}
    assert orders and tables["items"] and tables["tweets"]
    for order in orders.values():
        assert order["customer"] in customers
        assert order["store_id"] in stores
        # ISO strings of one format compare as the times they denote.
        assert order["ordered_at"] > stores[order["store_id"]]["opened_at"]
    for item in tables["items"]:
        assert item["order_id"] in orders and item["sku"] in products
    assert {s["sku"] for s in tables["supplies"]} <= products
    for tweet in tables["tweets"]:
        assert tweet["user_id"] in customers
    assert customers - {o["customer"] for o in orders.values()}, "some customers never order"
    for name in ("customers", "orders", "items", "stores", "tweets"):
        ids = [row["id"] for row in tables[name]]
        assert len(set(ids)) == len(ids), f"{name}: ids repeat"


def test_amounts_add_up(tables: dict[str, Rows]) -> None:
    price = {p["sku"]: int(p["price"]) for p in tables["products"]}
    rate = {s["id"]: float(s["tax_rate"]) for s in tables["stores"]}
    items_total: Counter[str] = Counter()
    for item in tables["items"]:
        items_total[item["order_id"]] += price[item["sku"]]
    for order in tables["orders"]:
        subtotal, tax = int(order["subtotal"]), int(order["tax_paid"])
        assert subtotal == items_total[order["id"]] > 0
        assert int(order["order_total"]) == subtotal + tax
        assert abs(tax - subtotal * rate[order["store_id"]]) <= 0.5


def test_supplies_repeat_their_id_across_products(tables: dict[str, Rows]) -> None:
    supplies = tables["supplies"]
    keys = Counter((s["id"], s["sku"]) for s in supplies)
    assert max(keys.values()) == 1, "id + sku is the key"
    assert max(Counter(s["id"] for s in supplies).values()) > 1
    assert {s["perishable"] for s in supplies} == {"True", "False"}
    # Something in the file needs quoting, so a naive reader or writer would show.
    assert any("," in p["description"] for p in tables["products"])
    assert any("," in t["content"] for t in tables["tweets"])


def test_volume_grows_with_scale(tables: dict[str, Rows], tmp_path: Path) -> None:
    bigger = {n: read(p) for n, p in generate_sample(tmp_path, days=60, scale=0.9, seed=3).items()}
    for name in ("customers", "orders", "items", "tweets"):
        ratio = len(bigger[name]) / len(tables[name])
        assert 2.6 < ratio < 3.4, (name, ratio)
    for name in ("products", "stores", "supplies"):
        assert len(bigger[name]) == len(tables[name]), name
    # Per year at scale 1: ~73k orders, ~1.47 items and ~0.3 tweets an order.
    orders = len(bigger["orders"])
    assert orders == round(73_000 * 0.9 * 60 / 365)
    assert 1.35 < len(bigger["items"]) / orders < 1.6
    assert 0.25 < len(bigger["tweets"]) / orders < 0.35
