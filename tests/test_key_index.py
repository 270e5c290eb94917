"""Per-file key hashes narrow "which files may hold these keys" to the files that can, on a
folder and on S3, and never drop a file that does."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.key_index import KeyIndex
from lakehouse.storage import Lake, Layer

KEY = ["supply_id", "product_id"]


def _three_files(lake: Lake) -> tuple[DeltaTable, list[str]]:
    """cleansed/supplies in three appends: (s<i>, p<i>) for i in 0-99, 100-199, 200-299."""
    target = lake.writable(Layer.CLEANSED, "supplies")
    stamp = lake.stamp("test", "cleansed/supplies")
    files: list[str] = []
    for start in (0, 100, 200):
        part = pl.DataFrame(
            {
                "supply_id": [f"s{i}" for i in range(start, start + 100)],
                "product_id": [f"p{i}" for i in range(start, start + 100)],
                "cost": [float(i) for i in range(start, start + 100)],
            }
        )
        snapshot = target.snapshot()
        before = set() if snapshot.dt is None else delta.file_paths(snapshot.dt)
        snapshot.append(part, stamp)
        assert snapshot.dt is not None
        [added] = delta.file_paths(snapshot.dt) - before
        files.append(added)
    dt = target.open()
    assert dt is not None
    return dt, files


def test_only_the_files_whose_hashes_match_are_candidates(lake: Lake) -> None:
    dt, files = _three_files(lake)
    index = lake.key_index()

    def held(keys: dict[str, list[str]]) -> list[str]:
        probe = index.probe_hashes(dt, pl.DataFrame(keys), KEY, typed_as=files[0])
        return index.candidates(dt, KEY, probe)

    assert held({"supply_id": ["s150", "s999"], "product_id": ["p150", "p999"]}) == [files[1]]
    assert held({"supply_id": ["s5", "s250"], "product_id": ["p5", "p250"]}) == sorted(
        [files[0], files[2]]
    )
    assert held({"supply_id": ["s999"], "product_id": ["p999"]}) == []
    # Both columns hash together: each value alone is in the table, the pair is not.
    assert held({"supply_id": ["s5"], "product_id": ["p6"]}) == []
    assert held({"supply_id": [None], "product_id": ["p5"]}) == []  # a NULL key matches none
    # Within given files only; and the added files' own hashes as a probe.
    probe = index.hashes_of(dt, [files[2]], KEY)
    assert probe.size == 100
    assert index.candidates(dt, KEY, probe, files[:2]) == []
    assert index.candidates(dt, KEY, probe, files) == [files[2]]


def test_a_probe_is_hashed_as_the_table_stores_its_key(lake: Lake) -> None:
    """Keys in another type than the table's (an int32 frame, a bigint column) hash as the
    table's copy would: a cast first, or a held key would look new."""
    target = lake.writable(Layer.CLEANSED, "numbers")
    target.snapshot().append(
        pl.DataFrame({"n": pl.Series([1, 2, 3], dtype=pl.Int64)}), lake.stamp("t", "n")
    )
    dt = target.open()
    assert dt is not None
    index = lake.key_index()
    [file] = delta.file_paths(dt)
    keys = pl.DataFrame({"n": pl.Series([2], dtype=pl.Int32)})
    probe = index.probe_hashes(dt, keys, ["n"], typed_as=file)
    assert index.candidates(dt, ["n"], probe) == sorted(delta.file_paths(dt))


def test_hashes_are_computed_once_per_file_and_again_when_damaged(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    dt, files = _three_files(lake)
    index = lake.key_index()
    reads: list[list[str]] = []
    view = delta.duckdb_view

    def counting(con: object, name: str, table: DeltaTable, only: object = None) -> None:
        if name == "indexed":
            reads.append(list(only or []))  # type: ignore[call-overload]
        view(con, name, table, only)  # type: ignore[arg-type]

    monkeypatch.setattr(delta, "duckdb_view", counting)
    first = index.hashes_of(dt, files, KEY)
    again = index.hashes_of(dt, files, KEY)
    assert first.size == again.size == 300
    assert (first == again).all()
    assert len(reads) == 3, "each file read once"
    for stored in index.directory.glob("*.npy"):
        stored.write_bytes(b"damaged")
    assert (KeyIndex(index.directory).hashes_of(dt, files, KEY) == first).all()
    assert len(reads) == 6


@pytest.mark.parametrize("with_index", [False, True])
def test_holds_any_is_exact_with_or_without_the_index(lake: Lake, with_index: bool) -> None:
    """The index only skips files; the answer is read from the files that may hold a key."""
    _, _ = _three_files(lake)
    snapshot = lake.writable(Layer.CLEANSED, "supplies").snapshot()
    index = lake.key_index() if with_index else None

    def holds(supply: list[str], product: list[str]) -> bool:
        return snapshot.holds_any(pl.DataFrame({"supply_id": supply, "product_id": product}), index)

    assert holds(["s150"], ["p150"])
    assert holds(["s999", "s299"], ["p999", "p299"])
    assert not holds(["s999"], ["p999"])
    assert not holds(["s5"], ["p6"])
    assert not snapshot.holds_any(pl.DataFrame({"supply_id": [], "product_id": []}), index)


def test_an_unwritable_work_folder_costs_work_not_the_answer(lake: Lake, tmp_path: Path) -> None:
    """The arrays only save reading: where they cannot be kept (a read-only or full work
    folder; here a file stands where the folder would be), every probe reads the files
    and the answers are the same."""
    dt, files = _three_files(lake)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    index = KeyIndex(blocked)
    probe = index.hashes_of(dt, [files[1]], KEY)
    assert index.candidates(dt, KEY, probe) == [files[1]]
    assert blocked.read_text() == ""
