"""The lake's layers: a module of its own so that what only names layers (the pins, the
catalog's callers) need not import the storage."""

from __future__ import annotations

from enum import StrEnum


class Layer(StrEnum):
    RAW = "raw"
    CLEANSED = "cleansed"
    MARTS = "marts"
    QUARANTINE = "quarantine"


GATED_LAYERS = frozenset({Layer.CLEANSED, Layer.MARTS})
"""Write-audit-publish layers: readers see a version only once it passed its blocking checks."""
