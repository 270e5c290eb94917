"""The Delta verbs' own promises, on a folder and on S3 (moto's server)."""

from __future__ import annotations

import polars as pl

from lakehouse.storage import Lake, Layer


def test_holds_any_tells_a_batch_of_new_keys_from_one_that_matches(lake: Lake) -> None:
    """What lets a cleansed batch of new keys be appended instead of MERGEd."""
    target = lake.writable(Layer.QUARANTINE, "supplies")
    stamp = lake.stamp("test", "quarantine/supplies")
    empty = target.snapshot()
    keys = pl.DataFrame({"supply_id": ["SUP-1"], "product_id": ["JAF-1"]})
    assert not empty.holds_any(keys)  # no table yet
    empty.append(
        pl.DataFrame(
            {"supply_id": ["SUP-1", "SUP-2"], "product_id": ["JAF-1", "JAF-2"], "cost": [1, 2]}
        ),
        stamp,
    )
    snapshot = target.snapshot()
    assert snapshot.holds_any(keys)
    # Both columns must match the same row: each value alone is in the table.
    crossed = pl.DataFrame({"supply_id": ["SUP-1", "SUP-3"], "product_id": ["JAF-2", "JAF-1"]})
    assert not snapshot.holds_any(crossed)
    assert snapshot.holds_any(pl.concat([crossed, keys]))
    assert not snapshot.holds_any(keys.clear())
    # The version the snapshot was taken at, not the newest.
    target.snapshot().append(
        pl.DataFrame({"supply_id": ["SUP-3"], "product_id": ["JAF-1"], "cost": [3]}), stamp
    )
    assert not snapshot.holds_any(crossed)
    assert target.snapshot().holds_any(crossed)
