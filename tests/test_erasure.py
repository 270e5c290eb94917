"""Right to erasure: a customer with orders, items, a quarantined order and a re-delivered
name change is erased; afterwards no object and no object version under the lake root
holds their id or either name, the marts equal the reference without them, the audit
trail holds the erasure (as a keyed hash), a rerun changes nothing and a build does not
bring them back. On a folder and on a versioned S3 bucket (moto)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from lakehouse import audit, delta, quarantine
from lakehouse.branch import refresh_pins
from lakehouse.cli import main
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.erasure import erase_customer, subject_hash
from lakehouse.landing import land_files
from lakehouse.privacy import scan_for_names
from lakehouse.sample_data import generate_sample
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, Layer
from tests.conftest import put_around_the_fence, put_table, run_build
from tests.lake_invariants import build_env
from tests.test_pipeline import assert_marts_match_reference

Delivery = dict[str, Path]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict[str, str]], header: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> Any:
    (event,) = [
        e
        for e in result.all_events
        if e.step_key == "erase_customer_everywhere" and e.is_successful_output
    ]
    return event.step_output_data.metadata[key].value


def _pick_subject(delivery: Delivery) -> tuple[str, str]:
    """A customer with at least two orders, each with items: (id, name)."""
    with_items = {i["order_id"] for i in _rows(delivery["items"])}
    orders = Counter(o["customer"] for o in _rows(delivery["orders"]) if o["id"] in with_items)
    names = {c["id"]: c["name"] for c in _rows(delivery["customers"])}
    customer = next(c for c, n in orders.most_common() if n >= 2 and c in names)
    return customer, names[customer]


def _second_delivery(first: Delivery, folder: Path, customer: str, new_name: str) -> Delivery:
    """The customer's name changes, and one of their orders breaks a rule (quarantined)."""
    store = _rows(first["stores"])[0]["id"]
    bad_order = {
        "id": "00000000-0000-4000-8000-00000000e7a5",
        "customer": customer,
        "ordered_at": "2018-09-05T10:00:00",
        "store_id": store,
        "subtotal": "100",
        "tax_paid": "500",  # more tax than subtotal: the row is set aside
        "order_total": "600",
    }
    header = list(_rows(first["orders"])[0])
    return {
        "customers": _write(
            folder / "raw_customers.csv", [{"id": customer, "name": new_name}], ["id", "name"]
        ),
        "orders": _write(folder / "raw_orders.csv", [bad_order], header),
    }


def _without(delivery: Delivery, folder: Path, customer: str, orders: set[str]) -> Delivery:
    """The same delivery with the customer's rows left out: what the reference sees."""
    out: Delivery = {}
    for source, path in delivery.items():
        rows = _rows(path)
        header = list(rows[0]) if rows else path.read_text().splitlines()[0].split(",")
        keep = [
            r
            for r in rows
            if customer not in (r.get("id"), r.get("customer"), r.get("user_id"))
            and not (source == "items" and r["order_id"] in orders)
        ]
        out[source] = _write(folder / path.name, keep, header)
    return out


@pytest.mark.slow
@pytest.mark.long_on_s3  # ~2.5 min through moto: with the reliability matrix
def test_erasure_removes_a_customer_from_every_layer_and_every_old_byte(
    settings: LakehouseSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = Lake(settings)
    if lake.is_s3:  # moto keeps every overwritten and deleted version, as AWS would
        bucket = settings.lake_root.removeprefix("s3://").split("/")[0]
        lake.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = generate_sample(tmp_path / "first", days=10, scale=0.05, seed=11)
    customer, old_name = _pick_subject(first)
    new_name = "Zelda Q. Erasable"
    second = _second_delivery(first, tmp_path / "second", customer, new_name)
    land_files(lake, first, datetime(2026, 11, 1, tzinfo=UTC))
    land_files(lake, second, datetime(2026, 11, 2, tzinfo=UTC))
    run_build(settings)
    held = quarantine.read(lake, "orders")
    assert held is not None and customer in held["customer"].to_list()
    orders = {o["id"] for o in _rows(first["orders"]) if o["customer"] == customer}
    subject = [customer, old_name, new_name]
    assert scan_for_names(lake, subject, everywhere=True).leaks  # they are there before

    branch = lake.branch(3)
    assert branch.pins.tables  # a pull request's branch, pinned before the erasure

    # Killed (SIGKILL) half way, after their orders left cleansed and before their customer
    # row did: the rerun below must finish the job from there.
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lakehouse.cli",
            "erase",
            "--customer-id",
            customer,
            "--reason",
            "x",
        ],
        env=build_env(settings, fault="erase.after_delete:cleansed/orders"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    half = delta.read(lake.table_uri(Layer.CLEANSED, "customers"), lake.storage_options)
    assert customer in half["customer_id"].to_list()

    # The operator's way in the UI: the erase job (it rebuilds the marts in a run of its own).
    defs = build_definitions(LakehouseResource.from_settings(settings))
    config = {"customer_id": customer, "reason": "GDPR request #42"}
    with dg.DagsterInstance.ephemeral() as instance:
        erased = defs.resolve_job_def("erase_customer_job").execute_in_process(
            run_config={"ops": {"erase_customer_everywhere": {"config": config}}},
            instance=instance,
        )
    assert erased.success
    # Between them, the killed run and the job deleted each of the subject's rows once.
    trail = audit.read(lake).filter(pl.col("action") == "erasure")
    deletes = trail.filter(pl.col("version_after").is_not_null())
    rows = dict(deletes.group_by("table").agg(pl.col("rows_affected").sum()).iter_rows())
    assert rows["raw/customers"] == 2  # both deliveries of their name
    assert rows["cleansed/customers"] == 1
    assert rows["quarantine/orders"] == 1
    assert rows["raw/orders"] == len(orders) + 1
    assert rows["cleansed/items"] >= len(orders)
    assert deletes.height == len(rows)  # one DELETE per table, none repeated by the rerun
    assert _metadata(erased, "rows_deleted")["cleansed/customers"] == 1  # after the kill
    assert _metadata(erased, "files_purged") and _metadata(erased, "landed_files_deleted")

    # Bytes: no object, no noncurrent version, no log, checkpoint, change data, verdict,
    # audit row or scratch database under the lake holds the id or either name.
    scan = scan_for_names(lake, subject, everywhere=True)
    assert scan.leaks == [], "\n".join(map(str, scan.leaks[:10]))
    assert_marts_match_reference(
        lake,
        [
            _without(first, tmp_path / "ref1", customer, orders),
            _without(second, tmp_path / "ref2", customer, orders),
        ],
    )

    # The trail: every erasing commit and the erasure itself, the subject as a keyed hash.
    assert trail.height == deletes.height + 1  # and the job's erasure event
    assert set(trail["reason"]) == {"GDPR request #42", "x"}  # the job's, the killed run's
    hashed = subject_hash(lake, customer)
    assert all(json.loads(d)["subject"] == hashed for d in trail["details"])
    assert audit.verify(lake).complete

    # The branch pinned before the erasure cannot read the purged files (it does not
    # resurrect the person); re-pinned, it reads prod as erased.
    with pytest.raises(Exception, match=r"(?i)not ?found|no such file|404"):
        pinned = branch.published_table(Layer.CLEANSED, "customers")
        assert pinned is not None
        pinned.to_pyarrow_table()
    refresh_pins(branch)
    repinned = branch.published_table(Layer.CLEANSED, "customers")
    assert repinned is not None
    assert customer not in repinned.to_pyarrow_table()["customer_id"].to_pylist()

    # Idempotent; and the next build, which reads landing and the ingest log like every
    # build, finds nothing to bring back (the erasure's own rebuild ran every step).
    stamp = lake.stamp("erase-again", "erasure", reason="GDPR request #42, rerun")
    again = erase_customer(lake, customer, stamp, lambda: True)
    assert not again.changed, again.describe()
    for name, value in build_env(settings).items():
        monkeypatch.setenv(name, value)
    assert main(["build"]) == 0
    assert "Nothing new" in capsys.readouterr().out
    assert scan_for_names(lake, subject, everywhere=True).leaks == []


def test_an_erasure_in_a_branch_erases_the_branch_s_own_tables_and_nothing_of_prod(
    tmp_path: Path,
) -> None:
    prod = Lake(
        LakehouseSettings(
            lake_root=str(tmp_path / "lake"),
            work_dir=tmp_path / "work",
            environment="prod",
            pii_secret="a-real-secret-for-tests",  # pragma: allowlist secret
        )
    )
    branch = prod.branch(9)
    landed = {"_source_file_uri": ["f.csv", "f.csv"], "_source_row_number": [1, 2]}
    orders = pl.DataFrame({"id": ["o1", "o2"], "customer": ["c-9", "c-other"], **landed})
    for lake in (prod, branch):
        put_table(lake, "raw", "orders", orders)
    put_around_the_fence(prod, prod.uri("landing", "orders", "x", "raw_orders.csv"), b"id\nc-9\n")

    stamp = branch.stamp("branch-erase", "erasure", reason="request in review")
    report = erase_customer(branch, "c-9", stamp, lambda: True)
    assert report.rows_deleted["raw/orders"] == 1 and not report.landed_files_deleted
    left = delta.read(branch.table_uri(Layer.RAW, "orders"), branch.storage_options)
    assert left["customer"].to_list() == ["c-other"]
    untouched = delta.read(prod.table_uri(Layer.RAW, "orders"), prod.storage_options)
    assert sorted(untouched["customer"]) == ["c-9", "c-other"]  # prod erases in prod
    assert (Path(prod.uri("landing", "orders", "x", "raw_orders.csv"))).exists()
    audit.record(branch, branch.stamp("branch-erase", "audit/trail"))  # as the CLI and job do
    trail = audit.read(branch).filter(pl.col("action") == "erasure")
    assert set(trail["environment"]) == {"branch pr-9"} and trail.height == 2


def test_landed_files_are_searched_as_ingestion_reads_them() -> None:
    """A compressed format hides the id from a byte search: Parquet and gzip are decoded."""
    import gzip
    import io

    from lakehouse.erasure import _landed_holds

    frame = pl.DataFrame({"id": ["o1", "o2"], "customer": ["c-9", "c-other"]})
    parquet = io.BytesIO()
    frame.write_parquet(parquet, compression="zstd")
    csv_text = frame.write_csv().encode()
    assert b"c-9" not in gzip.compress(csv_text)  # what a byte search would have missed
    for uri, data in (
        ("raw_orders.parquet", parquet.getvalue()),
        ("raw_orders.csv.gz", gzip.compress(csv_text)),
        ("raw_orders.csv", csv_text),
        ("raw_orders.unknown", b"id\nc-9\n"),  # unreadable by ingestion: its bytes
    ):
        assert _landed_holds(uri, data, ["c-9"]), uri
        assert not _landed_holds(uri, data, ["c-10"]), uri
