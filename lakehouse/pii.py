"""Customer names never leave the raw layer in clear: a keyed pseudonym and a masked form.

The pseudonym is HMAC-SHA256 under a secret key, so equal names join equal but nobody
without the key can confirm a guess (a plain hash of a name is a dictionary away from
reversal). The masked form keeps only each word's initial for display.
"""

from __future__ import annotations

import hmac
import unicodedata
from hashlib import sha256

import polars as pl


def _normalise(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def pseudonym(name: str, key: bytes) -> str:
    """Stable keyed pseudonym: case and spacing do not change it."""
    return hmac.new(key, _normalise(name).encode(), sha256).hexdigest()


def mask(name: str) -> str:
    """'Shelly Benitez' -> 'S***** B******': initials kept, lengths kept, nothing else."""
    return " ".join(w[0] + "*" * (len(w) - 1) for w in name.split())


def pseudonymize(df: pl.DataFrame, column: str, key: bytes) -> pl.DataFrame:
    """Replace ``column`` with ``<column>_pseudonym`` and ``<column>_masked``."""
    names = df.get_column(column).to_list()
    return df.with_columns(
        pl.Series(
            f"{column}_pseudonym",
            [None if n is None else pseudonym(n, key) for n in names],
            dtype=pl.String,
        ),
        pl.Series(
            f"{column}_masked", [None if n is None else mask(n) for n in names], dtype=pl.String
        ),
    ).drop(column)
