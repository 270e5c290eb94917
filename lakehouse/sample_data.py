"""Jaffle Shop sample files: dbt Labs' ``jafgen``, or a fast built-in generator of the same format.

Both write ``raw_<source>.csv`` files with jafgen's headers and value formats (ids as
UUIDs, amounts in integer cents, ISO timestamps without offset, CRLF line ends), so the
pipeline cannot tell them apart. ``jafgen`` simulates every customer minute by minute and
takes minutes for large volumes; the built-in generator draws the same shape of data in a
few vectorized steps, is deterministic per seed and scales linearly, for benchmarks and
tests.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl

SOURCE_NAMES = ("customers", "orders", "items", "products", "stores", "supplies", "tweets")

JAFGEN_HEADERS: dict[str, tuple[str, ...]] = {
    "customers": ("id", "name"),
    "orders": ("id", "customer", "ordered_at", "store_id", "subtotal", "tax_paid", "order_total"),
    "items": ("id", "order_id", "sku"),
    "products": ("sku", "name", "type", "price", "description"),
    "stores": ("id", "name", "opened_at", "tax_rate"),
    "supplies": ("id", "name", "cost", "perishable", "sku"),
    "tweets": ("id", "user_id", "tweeted_at", "content"),
}
"""The header jafgen 0.4.14 writes for each source, in its column order."""

# Volumes at scale 1, measured on ``jafgen 1``: ~73k orders and ~930 customers a year.
CUSTOMERS_PER_SCALE = 950
ORDERS_PER_SCALE_YEAR = 73_000
NEVER_ORDERING_SHARE = 0.08
# P(an order has more than 1, 2, 3 items): 1.47 items per order on average.
_MORE_ITEMS = (0.34, 0.10, 0.03)
TWEET_SHARE = 0.3
WANDER_SHARE = 0.1  # orders placed away from the customer's home store

# sku, name, type, price (cents), description, popularity
_PRODUCTS = (
    ("JAF-001", "the classic", "jaffle", 1100, "ham, cheese and tomato, pressed golden", 6),
    ("JAF-002", "bean there", "jaffle", 1100, "smoky baked beans and sharp cheddar", 4),
    ("JAF-003", "curry in a hurry", "jaffle", 1200, "lamb curry with mango chutney", 3),
    ("JAF-004", "the volcano", "jaffle", 1400, "spiced beef, jalapenos and pepper jack", 2),
    ("JAF-005", "sweet spot", "jaffle", 1200, "apple, cinnamon and caramel, dusted in sugar", 3),
    ("BEV-001", "flat white", "beverage", 500, "double ristretto with steamed milk", 9),
    ("BEV-002", "myrtle iced tea", "beverage", 600, "lemon myrtle tea over ice", 5),
    ("BEV-003", "berry smash", "beverage", 600, "mixed berry and yoghurt smoothie", 4),
    ("BEV-004", "cold brew", "beverage", 700, "coffee steeped cold for 18 hours", 5),
    ("BEV-005", "ginger fizz", "beverage", 400, "house ginger syrup, lime and soda", 3),
)
_JAFFLES = tuple(p[0] for p in _PRODUCTS if p[2] == "jaffle")
_DRINKS = tuple(p[0] for p in _PRODUCTS if p[2] == "beverage")

# supply id, name, cost (cents), perishable, skus that consume it: ids repeat across skus.
_SUPPLIES = (
    ("SUP-001", "compostable paper bag", 6, False, _JAFFLES),
    ("SUP-002", "napkin", 2, False, _JAFFLES + _DRINKS),
    ("SUP-003", "sourdough slices", 40, True, _JAFFLES),
    ("SUP-004", "butter", 8, True, _JAFFLES),
    ("SUP-005", "cheddar", 35, True, ("JAF-001", "JAF-002", "JAF-004")),
    ("SUP-006", "leg ham", 90, True, ("JAF-001",)),
    ("SUP-007", "tomato", 15, True, ("JAF-001",)),
    ("SUP-008", "baked beans", 30, True, ("JAF-002",)),
    ("SUP-009", "lamb curry", 210, True, ("JAF-003",)),
    ("SUP-010", "mango chutney", 25, True, ("JAF-003",)),
    ("SUP-011", "spiced beef", 240, True, ("JAF-004",)),
    ("SUP-012", "jalapenos", 20, True, ("JAF-004",)),
    ("SUP-013", "apple", 30, True, ("JAF-005",)),
    ("SUP-014", "caramel sauce", 28, True, ("JAF-005",)),
    ("SUP-015", "12oz paper cup", 12, False, _DRINKS),
    ("SUP-016", "cup lid", 4, False, _DRINKS),
    ("SUP-017", "paper straw", 3, False, ("BEV-002", "BEV-003", "BEV-005")),
    ("SUP-018", "espresso beans", 45, True, ("BEV-001", "BEV-004")),
    ("SUP-019", "milk", 20, True, ("BEV-001", "BEV-003")),
    ("SUP-020", "lemon myrtle tea", 30, True, ("BEV-002",)),
    ("SUP-021", "mixed berries", 80, True, ("BEV-003",)),
    ("SUP-022", "ginger syrup", 35, True, ("BEV-005",)),
    ("SUP-023", "soda water", 10, False, ("BEV-005",)),
    ("SUP-024", "ice", 2, True, ("BEV-002", "BEV-004", "BEV-005")),
)

# name, day it opens relative to the start (negative: already trading), tax rate, popularity.
# Sorted by opening day: the stores open on a given day are a prefix of this list.
_STORES = (
    ("Melbourne", -400, "0.06", 1.0),
    ("Sydney", -150, "0.04", 1.3),
    ("Brisbane", 45, "0.0625", 1.1),
    ("Adelaide", 130, "0.075", 0.9),
    ("Perth", 220, "0.05", 0.8),
    ("Hobart", 300, "0.08", 0.7),
)

_FIRST = (
    "Ava", "Ben", "Chloe", "Daniel", "Ella", "Farid", "Grace", "Hamish", "Isla", "Jack",
    "Kiri", "Liam", "Mia", "Nikhil", "Olivia", "Priya", "Quentin", "Ruby", "Sam", "Tahlia",
    "Uma", "Vince", "Willow", "Xavier", "Yasmin", "Zac", "Ana", "Bruno", "Chen", "Dana",
    "Eamon", "Fatima", "Giulia", "Hiro", "Ines", "Jonah", "Kofi", "Leila", "Mateo", "Noor",
)  # fmt: skip
_LAST = (
    "Abbott", "Bui", "Campbell", "Dimitriou", "Evans", "Fraser", "Gallagher", "Huang",
    "Ibrahim", "Jones", "Kowalski", "Lee", "Murphy", "Nguyen", "O'Connor", "Papadopoulos",
    "Quinn", "Rossi", "Singh", "Taylor", "Usman", "Vella", "Walsh", "Xu", "Young", "Zappia",
    "Brown", "Costa", "Kelly", "Martin", "Ng", "Patel", "Ryan", "Smith", "Tran", "Wilson",
)  # fmt: skip

# (opening, closing) of a tweet about an order, by mood: 0 unhappy, 1 neutral, 2 happy.
_TWEETS = (
    (
        ("Queued twenty minutes for ", ". Never again."),
        ("Jaffle Shop, you let me down: ", " was cold."),
        ("Why is ", " this bad lately?"),
    ),
    (
        ("Lunch sorted: ", "."),
        ("Had ", " at the Jaffle Shop. It was fine, I guess."),
        ("", ", same as always."),
    ),
    (
        ("Best part of my day: ", "!"),
        ("Cannot stop ordering ", ". Send help, and more jaffles."),
        ("Jaffle Shop, you did it again! ", ", perfection."),
    ),
)


def run_jafgen(out_dir: Path, years: int = 1) -> dict[str, Path]:
    """Run dbt Labs' jafgen (installed beside this interpreter) in ``out_dir``.

    jafgen always writes to ``./jaffle-data`` under its working directory; returns
    source name -> ``out_dir/jaffle-data/raw_<source>.csv``.
    """
    if years < 1:
        raise ValueError(f"jafgen needs at least one year, got {years}")
    exe = Path(sys.executable).with_name("jafgen")
    if not exe.exists():
        raise RuntimeError(f"jafgen is not installed beside {sys.executable} ({exe} is missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # jafgen sends nothing anywhere; the variables keep any library it pulls in quiet too.
    env = {**os.environ, "DO_NOT_TRACK": "1", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [str(exe), str(years)],
        cwd=out_dir,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"jafgen {years} failed with exit code {result.returncode}:\n{result.stderr.strip()[-4000:]}"
        )
    data = out_dir / "jaffle-data"
    files = {name: data / f"raw_{name}.csv" for name in SOURCE_NAMES}
    missing = sorted(str(p) for p in files.values() if not p.is_file())
    if missing:
        raise RuntimeError(f"jafgen exited cleanly but did not write {', '.join(missing)}")
    return files


# -- random building blocks (all drawn from one seeded ``random.Random``) -------------------
_VARIANT = {f"{i:x}": "89ab"[i % 4] for i in range(16)}


def _uniform(rng: random.Random, n: int) -> pl.Series:
    """``n`` uniform floats in [0, 1): a list comprehension is faster than any bytes trick."""
    draw = rng.random
    return pl.Series([draw() for _ in range(n)], dtype=pl.Float64)


def _uuids(rng: random.Random, n: int) -> pl.Series:
    """``n`` random version-4 UUID strings, formatted in bulk rather than one object each."""
    if n == 0:
        return pl.Series([], dtype=pl.String)
    hexes = rng.randbytes(16 * n).hex("\n", 16).split("\n")
    h = pl.col("h")
    return (
        pl.DataFrame({"h": hexes})
        .select(
            pl.concat_str(
                h.str.slice(0, 8),
                pl.lit("-"),
                h.str.slice(8, 4),
                pl.lit("-4"),
                h.str.slice(13, 3),
                pl.lit("-"),
                h.str.slice(16, 1).replace_strict(_VARIANT),
                h.str.slice(17, 3),
                pl.lit("-"),
                h.str.slice(20, 12),
            )
        )
        .to_series()
    )


def _pick(cumulative: pl.Series, u: pl.Series) -> pl.Series:
    """Weighted draw: index of the bucket of ``cumulative`` weights each ``u`` falls into.

    Zero-weight buckets are never picked: not even when ``u * total`` rounds up to the total.
    """
    total = cumulative.max()
    last_positive = cumulative.arg_max() or 0  # the first index holding the total
    picked = cumulative.search_sorted(u * total, side="right")
    return picked.clip(upper_bound=last_positive).cast(pl.Int64)


def _write(df: pl.DataFrame, path: Path) -> Path:
    """CSV as Python's csv module writes it (jafgen's): minimal quoting, CRLF line ends."""
    df.write_csv(path, line_terminator="\r\n", quote_style="necessary")
    return path


# -- the generator ---------------------------------------------------------------------
def generate_sample(
    out_dir: Path,
    days: int = 365,
    scale: float = 1.0,
    seed: int = 0,
    start: date = date(2018, 9, 1),
) -> dict[str, Path]:
    """Write the seven jafgen-format files for ``days`` of trading; returns source -> file.

    ``scale`` multiplies the customers (950 at scale 1), hence orders (~73k a year at
    scale 1), items (~1.47 per order) and tweets (~0.3 per order); the menu, supplies and
    six stores stay fixed, as in jafgen. The same arguments always give the same bytes.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    begin = datetime(start.year, start.month, start.day)

    stores = _stores(rng, begin)
    customers = _customers(rng, max(1, round(CUSTOMERS_PER_SCALE * scale)), days)
    n_orders = round(ORDERS_PER_SCALE_YEAR * scale * days / 365)
    orders = _orders(rng, customers, n_orders, days, begin)
    items = _items(rng, orders)
    orders = _amounts(orders, items, stores)
    tweets = _tweets(rng, orders, items, customers)

    paths = {name: out_dir / f"raw_{name}.csv" for name in SOURCE_NAMES}
    _write(customers.select("id", "name"), paths["customers"])
    _write(
        orders.select(
            "id",
            "customer",
            pl.col("ordered_at").dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "store_id",
            "subtotal",
            "tax_paid",
            "order_total",
        ),
        paths["orders"],
    )
    _write(items.select("id", "order_id", "sku"), paths["items"])
    _write(
        pl.DataFrame(
            [p[:5] for p in _PRODUCTS], schema=list(JAFGEN_HEADERS["products"]), orient="row"
        ),
        paths["products"],
    )
    _write(
        stores.select(
            "id", "name", pl.col("opened_at").dt.strftime("%Y-%m-%dT%H:%M:%S"), "tax_rate"
        ),
        paths["stores"],
    )
    supplies = [
        (sid, name, cost, str(perishable), sku)
        for sku, *_ in _PRODUCTS
        for sid, name, cost, perishable, skus in _SUPPLIES
        if sku in skus
    ]
    _write(
        pl.DataFrame(supplies, schema=list(JAFGEN_HEADERS["supplies"]), orient="row"),
        paths["supplies"],
    )
    _write(
        tweets.select(
            "id",
            "user_id",
            pl.col("tweeted_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"),
            "content",
        ),
        paths["tweets"],
    )
    return paths


def _stores(rng: random.Random, begin: datetime) -> pl.DataFrame:
    """The six stores; ``tax_bp`` is the rate in 1/10000ths, for exact integer tax."""
    return pl.DataFrame(
        {
            "store": list(range(len(_STORES))),
            "id": _uuids(rng, len(_STORES)),
            "name": [s[0] for s in _STORES],
            "open_day": [s[1] for s in _STORES],
            "opened_at": [begin + timedelta(days=s[1]) for s in _STORES],
            "tax_rate": [s[2] for s in _STORES],
            "tax_bp": [int(Decimal(s[2]) * 10_000) for s in _STORES],
        },
        schema_overrides={"opened_at": pl.Datetime("us")},
    )


def _customers(rng: random.Random, n: int, days: int) -> pl.DataFrame:
    """Customers, each with a first possible order day, a home store and an appetite.

    Half are regulars from the first day, the rest turn up over the period; a share never
    orders at all (weight 0), as a sign-up without a purchase would.
    """
    ids = _uuids(rng, n)
    names = [f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for _ in range(n)]
    join = [0 if rng.random() < 0.5 else rng.randrange(days) for _ in range(n)]
    popularity = [s[3] for s in _STORES]
    home = [
        rng.choices(range(k), weights=popularity[:k])[0] for k in (_open_count(day) for day in join)
    ]
    never = [rng.random() < NEVER_ORDERING_SHARE for _ in range(n)]
    if n > 1 and not any(never):
        never[0] = True
    if all(never):
        never[-1] = False
    appetite = [rng.expovariate(1.0) for _ in range(n)]
    mood = [rng.choice((0, 1, 1, 2, 2, 2)) for _ in range(n)]
    # Chance of ordering is appetite x days around: late joiners order less in total.
    weight = [0.0 if no else a * (days - j) for no, a, j in zip(never, appetite, join, strict=True)]
    return pl.DataFrame(
        {
            "customer": list(range(n)),
            "id": ids,
            "name": names,
            "join_day": join,
            "home": home,
            "mood": mood,
            "weight": weight,
        },
        schema_overrides={"join_day": pl.Int64, "home": pl.Int64, "mood": pl.Int64},
    )


def _open_count(day: int) -> int:
    """How many stores (a prefix of ``_STORES``) have opened by the start of ``day``."""
    return sum(1 for s in _STORES if s[1] <= day)


def _orders(
    rng: random.Random, customers: pl.DataFrame, n: int, days: int, begin: datetime
) -> pl.DataFrame:
    """Who orders when and where, sorted by time: ``n`` rows, amounts still missing.

    A customer's orders fall uniformly between their first day and the end; the time of
    day peaks around lunch within opening hours (7:00-20:00, weekends 8:00-15:00). Most
    orders go to the home store, some to any store already open that day, so no order
    predates its store.
    """
    who = _pick(customers.get_column("weight").cum_sum(), _uniform(rng, n))
    draws = pl.DataFrame(
        {
            "row": pl.int_range(0, n, eager=True),
            "customer": who,
            "u_day": _uniform(rng, n),
            "u_min1": _uniform(rng, n),
            "u_min2": _uniform(rng, n),
            "u_wander": _uniform(rng, n),
            "u_store": _uniform(rng, n),
            "u_items": _uniform(rng, n),
        }
    )
    open_days = [s[1] for s in _STORES]
    day = pl.col("join_day") + (pl.col("u_day") * (days - pl.col("join_day"))).floor().cast(
        pl.Int64
    )
    weekend = ((pl.col("day") + begin.weekday()) % 7) >= 5
    opens = pl.when(weekend).then(8 * 60).otherwise(7 * 60)
    span = pl.when(weekend).then(7 * 60).otherwise(13 * 60)
    minute = opens + ((pl.col("u_min1") + pl.col("u_min2")) / 2 * span).floor().cast(pl.Int64)
    n_items = pl.lit(1, pl.Int64)
    for threshold in _MORE_ITEMS:
        n_items = n_items + (pl.col("u_items") < threshold).cast(pl.Int64)
    frame = (
        draws.join(
            customers.select("customer", pl.col("id").alias("customer_id"), "join_day", "home"),
            on="customer",
            how="left",
            maintain_order="left",
        )
        .with_columns(day=day, n_items=n_items)
        .with_columns(
            minute=minute,
            # Stores open by the start of the order's day: a prefix of the store list.
            open_stores=pl.sum_horizontal((pl.col("day") >= d).cast(pl.Int64) for d in open_days),
        )
        .with_columns(
            store=pl.when(pl.col("u_wander") < WANDER_SHARE)
            .then((pl.col("u_store") * pl.col("open_stores")).floor().cast(pl.Int64))
            .otherwise(pl.col("home")),
            ordered_at=pl.lit(begin, pl.Datetime("us"))
            + pl.duration(days=pl.col("day"), minutes=pl.col("minute")),
        )
        .sort("ordered_at", "row")
        .select(pl.col("customer_id").alias("customer"), "ordered_at", "store", "n_items")
    )
    return frame.with_columns(order=pl.int_range(0, n), id=_uuids(rng, n))


def _items(rng: random.Random, orders: pl.DataFrame) -> pl.DataFrame:
    """One row per item of each order, in order; products drawn by popularity."""
    exploded = orders.select(
        "order", pl.col("id").alias("order_id"), k=pl.int_ranges(0, pl.col("n_items"))
    ).explode("k")
    n = exploded.height
    popularity = pl.Series([float(p[5]) for p in _PRODUCTS]).cum_sum()
    products = pl.DataFrame(
        {
            "product": list(range(len(_PRODUCTS))),
            "sku": [p[0] for p in _PRODUCTS],
            "product_name": [p[1] for p in _PRODUCTS],
            "price": [p[3] for p in _PRODUCTS],
        },
        schema_overrides={"product": pl.Int64, "price": pl.Int64},
    )
    return (
        exploded.with_columns(product=_pick(popularity, _uniform(rng, n)), id=_uuids(rng, n))
        .join(products, on="product", how="left", maintain_order="left")
        .select("id", "order", "order_id", "sku", "product_name", "price")
    )


def _amounts(orders: pl.DataFrame, items: pl.DataFrame, stores: pl.DataFrame) -> pl.DataFrame:
    """Subtotal from the items, tax rounded half to even (as Python's round), in cents."""
    subtotals = items.group_by("order").agg(subtotal=pl.col("price").sum())
    taxed = pl.col("subtotal") * pl.col("tax_bp")
    whole, rest = taxed // 10_000, taxed % 10_000
    round_up = (rest > 5_000) | ((rest == 5_000) & (whole % 2 == 1))
    return (
        orders.join(subtotals, on="order", how="left", maintain_order="left")
        .join(
            stores.select("store", pl.col("id").alias("store_id"), "tax_bp"),
            on="store",
            how="left",
            maintain_order="left",
        )
        .with_columns(tax_paid=whole + round_up.cast(pl.Int64))
        .with_columns(order_total=pl.col("subtotal") + pl.col("tax_paid"))
        .sort("order")
    )


def _tweets(
    rng: random.Random, orders: pl.DataFrame, items: pl.DataFrame, customers: pl.DataFrame
) -> pl.DataFrame:
    """About ``TWEET_SHARE`` of orders draw a tweet from the customer 1 min to 3 h later.

    The text names what was ordered and its tone follows the customer's mood; some texts
    hold commas, so the CSV writer's quoting is exercised.
    """
    n = orders.height
    said = (
        orders.select("order", "ordered_at", "customer")
        .with_columns(u_tweet=_uniform(rng, n), u_after=_uniform(rng, n), u_text=_uniform(rng, n))
        .filter(pl.col("u_tweet") < TWEET_SHARE)
    )
    what = items.group_by("order", maintain_order=True).agg(
        pl.col("product_name").str.join(" and ")
    )
    by_mood = customers.select(pl.col("id").alias("customer"), "mood")
    variants = len(_TWEETS[0])
    templates = pl.DataFrame(
        {
            "template": list(range(len(_TWEETS) * variants)),
            "opening": [t[0] for mood in _TWEETS for t in mood],
            "closing": [t[1] for mood in _TWEETS for t in mood],
        },
        schema_overrides={"template": pl.Int64},
    )
    three_hours_us = 3 * 3600 * 1_000_000
    frame = (
        said.join(what, on="order", how="left", maintain_order="left")
        .join(by_mood, on="customer", how="left", maintain_order="left")
        .with_columns(
            template=pl.col("mood") * variants
            + (pl.col("u_text") * variants).floor().cast(pl.Int64),
            tweeted_at=pl.col("ordered_at")
            + pl.duration(
                microseconds=60_000_000
                + (pl.col("u_after") * three_hours_us).floor().cast(pl.Int64)
            ),
        )
        .join(templates, on="template", how="left", maintain_order="left")
        .with_columns(
            content=pl.concat_str("opening", "product_name", "closing"),
        )
        .sort("tweeted_at", "order")
    )
    return frame.select(
        id=_uuids(rng, frame.height),
        user_id="customer",
        tweeted_at="tweeted_at",
        content="content",
    )
