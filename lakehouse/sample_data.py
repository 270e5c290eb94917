"""Jaffle Shop sample files: dbt Labs' ``jafgen``, or a fast built-in generator of the same format.

Both write ``raw_<source>.csv`` files with jafgen's headers and value formats (ids as
UUIDs, amounts in integer cents, ISO timestamps without offset), so the pipeline cannot
tell them apart. ``jafgen`` simulates customer behaviour and is slow at large volumes;
the built-in generator is seeded, deterministic and scales linearly, for benchmarks and
tests.
"""

from __future__ import annotations

import csv
import random
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from lakehouse.sources import SOURCES

HEADERS = {
    "customers": ("id", "name"),
    "orders": ("id", "customer", "ordered_at", "store_id", "subtotal", "tax_paid", "order_total"),
    "items": ("id", "order_id", "sku"),
    "products": ("sku", "name", "type", "price", "description"),
    "stores": ("id", "name", "opened_at", "tax_rate"),
    "supplies": ("id", "name", "cost", "perishable", "sku"),
    "tweets": ("id", "user_id", "tweeted_at", "content"),
}

# (sku, name, type, price in cents, description)
_PRODUCTS = (
    ("JAF-001", "nutellaphone who dis?", "jaffle", 1100, "nutella and banana jaffle"),
    ("JAF-002", "doctor stew", "jaffle", 1100, "house-made beef stew jaffle"),
    (
        "JAF-003",
        "the krautback",
        "jaffle",
        1200,
        "lamb and pork bratwurst with house-pickled cabbage, sauerkraut and mustard",
    ),
    (
        "JAF-004",
        "flame impala",
        "jaffle",
        1400,
        "pulled pork and pineapple al pastor marinated in ghost pepper sauce, kevin parker's favorite!",
    ),
    (
        "JAF-005",
        "mel-bun",
        "jaffle",
        1200,
        "melon and minced beef bao, in a jaffle, savory and sweet",
    ),
    ("BEV-001", "tangaroo", "beverage", 600, "mango and tangerine smoothie"),
    ("BEV-002", "chai and mighty", "beverage", 500, "oatmilk chai latte with protein boost"),
    ("BEV-003", "vanilla ice", "beverage", 600, "iced coffee with house-made french vanilla syrup"),
    (
        "BEV-004",
        "for richer or pourover",
        "beverage",
        700,
        "daily selection of single estate beans for a delicious hot pourover",
    ),
    (
        "BEV-005",
        "adele-ade",
        "beverage",
        400,
        "a kiwi and lime agua fresca, hello from the other side of thirst",
    ),
)

# (supply id, name, cost in cents, perishable, skus that use it): ids repeat across skus.
_SUPPLIES = (
    (
        "SUP-001",
        "compostable cutlery - knife",
        7,
        False,
        ("JAF-001", "JAF-002", "JAF-003", "JAF-004", "JAF-005"),
    ),
    (
        "SUP-002",
        "cutlery - fork",
        7,
        False,
        ("JAF-001", "JAF-002", "JAF-003", "JAF-004", "JAF-005"),
    ),
    ("SUP-003", "serving boat", 11, False, ("JAF-001", "JAF-002", "JAF-003", "JAF-004", "JAF-005")),
    ("SUP-004", "napkin", 4, False, ("JAF-001", "JAF-002", "JAF-003", "JAF-004", "JAF-005")),
    (
        "SUP-005",
        "16oz compostable clear cup",
        13,
        False,
        ("BEV-001", "BEV-002", "BEV-003", "BEV-004", "BEV-005"),
    ),
    (
        "SUP-006",
        "16oz compostable clear lid",
        4,
        False,
        ("BEV-001", "BEV-002", "BEV-003", "BEV-004", "BEV-005"),
    ),
    ("SUP-007", "biodegradable straw", 13, False, ("BEV-001", "BEV-002", "BEV-003", "BEV-005")),
    ("SUP-008", "chocolate hazelnut spread", 5, True, ("JAF-001",)),
    ("SUP-009", "bread", 33, True, ("JAF-001", "JAF-002", "JAF-003", "JAF-004", "JAF-005")),
    ("SUP-010", "beef stew", 169, True, ("JAF-002",)),
    ("SUP-011", "lamb and pork bratwurst", 234, True, ("JAF-003",)),
    ("SUP-012", "house-pickled cabbage", 43, True, ("JAF-003",)),
    ("SUP-013", "pulled pork", 215, True, ("JAF-004",)),
    ("SUP-014", "pineapple", 26, True, ("JAF-004", "BEV-001")),
    ("SUP-015", "melon", 33, True, ("JAF-005", "BEV-001")),
    ("SUP-016", "minced beef", 124, True, ("JAF-005",)),
    ("SUP-017", "ghost pepper sauce", 20, True, ("JAF-004",)),
    ("SUP-018", "mango", 32, True, ("BEV-001",)),
    ("SUP-019", "tangerine", 20, True, ("BEV-001",)),
    ("SUP-020", "chai", 11, True, ("BEV-002",)),
    ("SUP-021", "oat milk", 11, True, ("BEV-002", "BEV-003")),
    ("SUP-022", "coffee beans", 26, True, ("BEV-003", "BEV-004")),
    ("SUP-023", "french vanilla syrup", 18, True, ("BEV-003",)),
    ("SUP-024", "kiwi", 20, True, ("BEV-005",)),
    ("SUP-025", "lime", 13, True, ("BEV-005",)),
)

# (name, days after the start it opens (negative: already open), tax rate)
_STORES = (
    ("Philadelphia", -365, "0.06"),
    ("Brooklyn", -120, "0.04"),
    ("Chicago", 60, "0.0625"),
    ("San Francisco", 150, "0.075"),
    ("New Orleans", 240, "0.04"),
    ("Los Angeles", 330, "0.08"),
)

_FIRST = (
    "Amanda",
    "Brian",
    "Carla",
    "David",
    "Elena",
    "Felix",
    "Grace",
    "Hector",
    "Ines",
    "James",
    "Keiko",
    "Liam",
    "Maria",
    "Noah",
    "Olivia",
    "Pedro",
    "Quinn",
    "Rosa",
    "Samuel",
    "Tara",
    "Umar",
    "Vera",
    "William",
    "Ximena",
    "Yusuf",
    "Zoe",
)
_LAST = (
    "Anderson",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Huang",
    "Ito",
    "Johnson",
    "Kim",
    "Lopez",
    "Martin",
    "Nguyen",
    "O'Brien",
    "Patel",
    "Rossi",
    "Smith",
    "Tanaka",
    "Ueda",
    "Valdez",
    "Walker",
    "Young",
    "Zhang",
)
_TWEETS = (
    "Loved the {p}, will be back!",
    "The {p} was cold today, not great.",
    "Can't stop thinking about the {p}",
    "{p}, again. No regrets.",
    "Queue was long but the {p} was worth it",
    "Why is the {p} so good?",
)

CUSTOMERS_PER_SCALE = 950
ORDERS_PER_CUSTOMER_YEAR = 77  # ~73k orders a year at scale 1, as jafgen's default
NEVER_ORDERING_SHARE = 0.1


def run_jafgen(out_dir: Path, years: int = 1) -> dict[str, Path]:
    """Run dbt Labs' jafgen (installed beside this interpreter); returns source -> file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).with_name("jafgen")
    result = subprocess.run(
        [str(beside) if beside.exists() else "jafgen", str(years)],
        cwd=out_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"jafgen {years} failed ({result.returncode}): {result.stderr[-2000:]}")
    data = out_dir / "jaffle-data"
    files = {name: data / source.jafgen_file for name, source in SOURCES.items()}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"jafgen did not write {', '.join(missing)}")
    return files


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def generate_sample(
    out_dir: Path,
    days: int = 365,
    scale: float = 1.0,
    seed: int = 0,
    start: date = date(2018, 9, 1),
) -> dict[str, Path]:
    """Write the seven jafgen-format files for ``days`` of trading; returns source -> file.

    Volume grows linearly with ``scale`` (customers, hence orders, items and tweets);
    the menu, supplies and stores stay fixed, as in jafgen. Deterministic per seed.
    """
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    begin = datetime(start.year, start.month, start.day)

    stores = [
        (_uuid(rng), name, begin + timedelta(days=offset), rate) for name, offset, rate in _STORES
    ]
    n_customers = max(2, round(CUSTOMERS_PER_SCALE * scale))
    customers = [
        (_uuid(rng), f"{rng.choice(_FIRST)} {rng.choice(_LAST)}") for _ in range(n_customers)
    ]
    ordering = customers[: max(1, int(n_customers * (1 - NEVER_ORDERING_SHARE)))]
    # Each ordering customer has a favourite store and an appetite; a few order a lot.
    appetite = [rng.expovariate(1.0) for _ in ordering]
    favourite = [rng.randrange(len(stores)) for _ in ordering]

    jaffles = [p for p in _PRODUCTS if p[2] == "jaffle"]
    beverages = [p for p in _PRODUCTS if p[2] == "beverage"]
    total_orders = round(len(ordering) * ORDERS_PER_CUSTOMER_YEAR * days / 365)

    paths = {name: out_dir / f"raw_{name}.csv" for name in HEADERS}
    with (
        paths["orders"].open("w", newline="") as orders_fh,
        paths["items"].open("w", newline="") as items_fh,
        paths["tweets"].open("w", newline="") as tweets_fh,
    ):
        orders_w, items_w, tweets_w = (csv.writer(f) for f in (orders_fh, items_fh, tweets_fh))
        orders_w.writerow(HEADERS["orders"])
        items_w.writerow(HEADERS["items"])
        tweets_w.writerow(HEADERS["tweets"])
        buyers = rng.choices(range(len(ordering)), weights=appetite, k=total_orders)
        for who in buyers:
            day = rng.randrange(days)
            at = begin + timedelta(days=day, seconds=rng.randrange(7 * 3600, 21 * 3600) // 60 * 60)
            open_stores = [s for s in stores if s[2] <= at] or stores[:1]
            store = (
                stores[favourite[who]]
                if stores[favourite[who]] in open_stores
                else rng.choice(open_stores)
            )
            order_id = _uuid(rng)
            basket = [rng.choice(beverages)] if rng.random() < 0.9 else []
            if rng.random() < 0.3 or not basket:
                basket.append(rng.choice(jaffles))
            while rng.random() < 0.15:
                basket.append(rng.choice(_PRODUCTS))
            subtotal = sum(p[3] for p in basket)
            tax = round(subtotal * float(store[3]))
            orders_w.writerow(
                (
                    order_id,
                    ordering[who][0],
                    at.isoformat(),
                    store[0],
                    subtotal,
                    tax,
                    subtotal + tax,
                )
            )
            items_w.writerows((_uuid(rng), order_id, p[0]) for p in basket)
            if rng.random() < 0.3:
                said = at + timedelta(
                    seconds=rng.randrange(60, 6 * 3600), microseconds=rng.randrange(1_000_000)
                )
                text = rng.choice(_TWEETS).format(p=rng.choice(basket)[1])
                tweets_w.writerow(
                    (_uuid(rng), ordering[who][0], said.isoformat(timespec="microseconds"), text)
                )

    _write(paths["customers"], HEADERS["customers"], customers)
    _write(paths["products"], HEADERS["products"], _PRODUCTS)
    _write(paths["stores"], HEADERS["stores"], ((i, n, o.isoformat(), r) for i, n, o, r in stores))
    _write(
        paths["supplies"],
        HEADERS["supplies"],
        (
            (sid, name, cost, str(perishable), sku)
            for sid, name, cost, perishable, skus in _SUPPLIES
            for sku in skus
        ),
    )
    return paths
