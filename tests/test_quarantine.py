"""A bad row never stops the line: row rules quarantine, the good rows and every mart
publish on the same build, late-arriving references release rows by themselves, and an
operator can see, accept, release, discard and re-ingest from the CLI and as Dagster jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from lakehouse import delta, ingest, quarantine
from lakehouse.cli import main
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.marts import read_mart
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, LandedFile, Layer
from tests.conftest import run_build
from tests.test_pipeline import read_csv, write_csv

DAY1 = datetime(2026, 11, 1, tzinfo=UTC)


def new_orders(template: dict[str, str], n: int, first: int, **changes: str) -> list[dict]:
    """``n`` new orders like ``template`` with fresh ids (``order-<k>``)."""
    return [{**template, "id": f"order-{first + i}", **changes} for i in range(n)]


def deliver(lake: Lake, out: Path, day: int, source: str, rows: list[dict]) -> None:
    """Land ``rows`` as a jafgen-named file of ``source``, ``day`` days after DAY1."""
    path = write_csv(out / f"day-{day}" / f"raw_{source}.csv", rows)
    land_files(lake, {source: path}, DAY1 + timedelta(day))


def published(lake: Lake, table: str) -> pl.DataFrame:
    dt = lake.published_table(Layer.CLEANSED, table)
    assert dt is not None
    frame = pl.from_arrow(dt.to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def quarantined(lake: Lake, table: str) -> pl.DataFrame:
    found = quarantine.read(lake, table)
    return found if found is not None else pl.DataFrame()


def cli(settings: LakehouseSettings, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", settings.lake_root)
    monkeypatch.setenv("LAKEHOUSE_WORK_DIR", str(settings.work_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return main(list(argv))


@pytest.mark.slow
def test_one_bad_row_is_quarantined_and_everything_else_publishes_then_it_is_released(
    built: Lake,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake, settings = built, built.settings
    template = read_csv(sample_delivery["orders"])[0]
    late = "late-customer"
    batch = new_orders(template, 49, 0) + new_orders(template, 1, 49, customer=late)
    deliver(lake, tmp_path, 1, "orders", batch)

    result = run_build(settings)  # exit 0: one bad row does not stop the line

    orders = published(lake, "orders")
    assert {f"order-{i}" for i in range(49)} <= set(orders["order_id"])
    assert "order-49" not in set(orders["order_id"])
    assert {f"order-{i}" for i in range(49)} <= set(read_mart(lake, "orders")["order_id"])
    marts = {
        m.asset_key.to_user_string()
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string().startswith("marts/")
    }
    assert len(marts) == 7, marts  # every mart published on the same build
    held = quarantined(lake, "orders")
    (bad,) = held.filter(pl.col("id") == "order-49").iter_rows(named=True)
    assert bad[quarantine.RULE] == "customer_id__invalid__ref"
    assert "customer_id exists in cleansed/customers" in bad[quarantine.QUARANTINE_REASON], bad
    assert bad[quarantine.STATUS] == quarantine.Status.QUARANTINED
    assert bad[quarantine.HELD_FOR] is not None  # a missing reference: judged again each run

    # The operator sees the row: file, row number, rule and the values as landed.
    capsys.readouterr()
    assert cli(settings, monkeypatch, "quarantine", "show", "orders") == 0
    shown = capsys.readouterr().out
    assert "order-49" in shown and "row 50" in shown and "customer_id__invalid__ref" in shown
    assert cli(settings, monkeypatch, "quarantine", "list") == 0
    assert "quarantine/orders\tquarantined\t1\t" in capsys.readouterr().out

    # The next delivery publishes too, the held row stays held.
    more = new_orders(template, 50, 100)
    deliver(lake, tmp_path, 2, "orders", more)
    run_build(settings)
    assert {f"order-{i}" for i in range(100, 150)} <= set(published(lake, "orders")["order_id"])
    assert "order-49" not in set(published(lake, "orders")["order_id"])

    # The late customer arrives: the order is released by the next build, with no command.
    customer = {**read_csv(sample_delivery["customers"])[0], "id": late}
    deliver(lake, tmp_path, 3, "customers", [customer])
    run_build(settings)
    assert "order-49" in set(published(lake, "orders")["order_id"])
    assert "order-49" in set(read_mart(lake, "orders")["order_id"])
    (released,) = (
        quarantined(lake, "orders").filter(pl.col("id") == "order-49").iter_rows(named=True)
    )
    assert released[quarantine.STATUS] == quarantine.Status.RELEASED
    # Reconciled: every landed order is published or held, none twice.
    landed = len(read_csv(sample_delivery["orders"])) + 100
    active = quarantined(lake, "orders").filter(
        pl.col(quarantine.STATUS) != quarantine.Status.RELEASED
    )
    orders = published(lake, "orders")
    assert orders.height == orders["order_id"].n_unique()
    assert orders.height + active.height == landed


@pytest.mark.slow
def test_a_batch_over_the_threshold_stops_names_its_rows_and_can_be_accepted(
    built: Lake,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake, settings = built, built.settings
    template = read_csv(sample_delivery["orders"])[0]
    before = published(lake, "orders")
    batch = new_orders(template, 20, 0) + new_orders(template, 12, 20, customer="nobody")
    deliver(lake, tmp_path, 1, "orders", batch)

    capsys.readouterr()
    assert cli(settings, monkeypatch, "build") == 1
    out, err = capsys.readouterr()
    # Progress: a line per finished step with what it did, the failed one marked.
    assert "done   raw__orders (" in out and ": 1 files; 32 rows added" in out
    assert "FAILED cleansed__orders (" in out
    # One line naming the failed step and cause, then the rows at fault.
    assert "FAILED cleansed__orders: cleansed/orders: the batch of raw versions" in err
    assert "12 row(s) would be quarantined (38% of the batch" in err
    assert "raw_orders.csv row 21: customer_id__invalid__ref" in err
    assert "lakehouse quarantine accept cleansed/orders" in err
    assert "Traceback" not in err
    assert published(lake, "orders").equals(before)  # nothing was written

    # The operator accepts the batch: the 12 rows go to quarantine, the 20 publish.
    assert cli(settings, monkeypatch, "quarantine", "accept", "orders", "--reason", "known") == 0
    orders = published(lake, "orders")
    assert {f"order-{i}" for i in range(20)} <= set(orders["order_id"])
    held = quarantined(lake, "orders").filter(pl.col(quarantine.STATUS) == "quarantined")
    assert held.height == 12

    # Discard two with a recorded reason; release one whose reference is still missing.
    file = held[quarantine.SOURCE_FILE_URI][0]
    assert cli(settings, monkeypatch, "quarantine", "discard", "orders", "--reason", "test order",
               "--file", file, "--row", "21") == 0  # fmt: skip
    assert cli(settings, monkeypatch, "quarantine", "release", "orders", "--reason", "fixed?",
               "--file", file, "--row", "22") == 0  # fmt: skip
    assert (
        cli(
            settings,
            monkeypatch,
            "quarantine",
            "discard",
            "orders",
            "--reason",
            "x",
            "--file",
            file,
            "--row",
            "1",
        )
        == 1
    )  # fmt: skip  (row 1 was never quarantined)
    run_build(settings)
    rows = quarantined(lake, "orders")
    status = dict(zip(rows["id"], rows[quarantine.STATUS], strict=True))
    assert status["order-20"] == quarantine.Status.DISCARDED
    assert status["order-21"] == quarantine.Status.QUARANTINED  # judged again: still failing
    assert "order-21" not in set(published(lake, "orders")["order_id"])
    (discarded,) = rows.filter(pl.col("id") == "order-20").iter_rows(named=True)
    assert discarded[quarantine.STATUS_REASON] == "operator: test order"


@pytest.mark.slow
def test_a_rejected_file_is_reingested_on_request_from_the_cli_or_a_job(
    built: Lake,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A reader limit (a fixed bug, say) rejected a file whose bytes were fine: after the
    fix, the same file is read again only when an operator asks."""
    lake, settings = built, built.settings
    template = read_csv(sample_delivery["orders"])[0]
    deliver(lake, tmp_path, 1, "orders", new_orders(template, 3, 0))
    real_reader = ingest.open_landed

    def refusing_reader(lake: Lake, f: LandedFile) -> Any:
        raise ingest.LandedFileError(f"{f.uri}: a reader limit that was since lifted")

    monkeypatch.setattr(ingest, "open_landed", refusing_reader)
    run_build(settings)
    monkeypatch.setattr(ingest, "open_landed", real_reader)
    capsys.readouterr()
    assert cli(settings, monkeypatch, "quarantine", "files") == 0
    listed = capsys.readouterr().out
    assert "raw_orders.csv" in listed and "a reader limit that was since lifted" in listed
    uri = listed.split("\t")[1]
    run_build(settings)
    assert "order-0" not in set(published(lake, "orders")["order_id"])  # handled: not re-read

    defs = build_definitions(LakehouseResource.from_settings(settings))
    with dg.DagsterInstance.ephemeral() as instance:
        asked = defs.resolve_job_def("reingest_file_job").execute_in_process(
            run_config={
                "ops": {"reingest_landed_file": {"config": {"file": uri, "reason": "fixed"}}}
            },
            instance=instance,
        )
    assert asked.success
    run_build(settings)
    assert {"order-0", "order-1", "order-2"} <= set(published(lake, "orders")["order_id"])
    assert cli(settings, monkeypatch, "quarantine", "reingest", "--file", uri, "--reason", "x") == 1


@pytest.mark.slow
def test_the_quarantine_job_releases_and_discards_like_the_cli(
    built: Lake, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    lake, settings = built, built.settings
    template = read_csv(sample_delivery["orders"])[0]
    batch = new_orders(template, 30, 0) + new_orders(template, 1, 30, customer="nobody")
    deliver(lake, tmp_path, 1, "orders", batch)
    run_build(settings)
    job = build_definitions(LakehouseResource.from_settings(settings)).resolve_job_def(
        "quarantine_action_job"
    )

    def act(**config: object) -> dg.ExecuteInProcessResult:
        with dg.DagsterInstance.ephemeral() as instance:
            return job.execute_in_process(
                run_config={"ops": {"change_quarantined_rows": {"config": config}}},
                instance=instance,
                raise_on_error=False,
            )

    assert not act(table="orders", action="discard", reason="x", row=1).success  # no such row
    assert not act(table="nope", action="discard", reason="x").success
    done = act(table="orders", action="discard", reason="a test order", row=31)
    assert done.success
    (row,) = quarantined(lake, "orders").iter_rows(named=True)
    assert row[quarantine.STATUS] == quarantine.Status.DISCARDED
    assert row[quarantine.STATUS_REASON] == "operator: a test order"


def test_future_orders_are_quarantined_not_published(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    """A timestamp in the future is a row rule: the row waits in quarantine."""
    lake = Lake(local_settings)
    orders = read_csv(sample_delivery["orders"])
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    batch = orders + new_orders(orders[0], 1, 30, ordered_at=future)
    land_files(
        lake,
        {**sample_delivery, "orders": write_csv(tmp_path / "o" / "raw_orders.csv", batch)},
        DAY1,
    )
    run_build(local_settings)
    assert "order-30" not in set(published(lake, "orders")["order_id"])
    (held,) = quarantined(lake, "orders").iter_rows(named=True)
    assert held["id"] == "order-30" and "not in the future" in held[quarantine.QUARANTINE_REASON]
    assert delta.readable_version(lake.table_uri(Layer.CLEANSED, "orders"), {}) is not None
