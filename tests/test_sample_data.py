"""The built-in generator writes what jafgen writes, consistently, and scales."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from lakehouse.sample_data import HEADERS, generate_sample, run_jafgen


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_sample(tmp_path_factory.mktemp("sample"), days=60, scale=0.3, seed=3)


def test_headers_match_a_real_jafgen_run(sample: dict[str, Path], tmp_path: Path) -> None:
    jafgen = run_jafgen(tmp_path, years=1)
    for name, path in jafgen.items():
        with path.open(newline="") as fh:
            assert tuple(next(csv.reader(fh))) == HEADERS[name], name
        with sample[name].open(newline="") as fh:
            assert tuple(next(csv.reader(fh))) == HEADERS[name], name


def test_the_same_seed_gives_the_same_files(sample: dict[str, Path], tmp_path: Path) -> None:
    again = generate_sample(tmp_path, days=60, scale=0.3, seed=3)
    assert all(again[n].read_bytes() == sample[n].read_bytes() for n in HEADERS)
    other = generate_sample(tmp_path / "other", days=60, scale=0.3, seed=4)
    assert other["orders"].read_bytes() != sample["orders"].read_bytes()


def test_references_and_amounts_are_consistent(sample: dict[str, Path]) -> None:
    customers = {c["id"] for c in rows(sample["customers"])}
    stores = {s["id"]: s for s in rows(sample["stores"])}
    products = {p["sku"]: p for p in rows(sample["products"])}
    orders = rows(sample["orders"])
    items = rows(sample["items"])
    assert orders and items
    price_of_order: Counter[str] = Counter()
    for item in items:
        price_of_order[item["order_id"]] += int(products[item["sku"]]["price"])
    for o in orders:
        assert o["customer"] in customers and o["store_id"] in stores
        assert o["ordered_at"] >= stores[o["store_id"]]["opened_at"]
        assert int(o["order_total"]) == int(o["subtotal"]) + int(o["tax_paid"])
        assert int(o["subtotal"]) == price_of_order[o["id"]]
    assert {i["order_id"] for i in items} <= {o["id"] for o in orders}
    assert customers - {o["customer"] for o in orders}, "some customers never order"
    supplies = rows(sample["supplies"])
    assert {s["sku"] for s in supplies} <= set(products)
    assert max(Counter(s["id"] for s in supplies).values()) > 1, "supply ids repeat across skus"
    assert {s["perishable"] for s in supplies} == {"True", "False"}
    assert all(t["user_id"] in customers for t in rows(sample["tweets"]))


def test_volume_grows_with_scale(sample: dict[str, Path], tmp_path: Path) -> None:
    bigger = generate_sample(tmp_path, days=60, scale=0.9, seed=3)
    ratio = len(rows(bigger["orders"])) / len(rows(sample["orders"]))
    assert 2.5 < ratio < 3.5
