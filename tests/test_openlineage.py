"""OpenLineage events: off by default; START/COMPLETE per materialization to a local HTTP
receiver on loopback or to a file; FAIL when the work fails."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lakehouse import openlineage
from lakehouse.defs.cleansed import cleansed_assets
from lakehouse.defs.raw import raw_assets
from lakehouse.defs.resources import LakehouseResource
from lakehouse.openlineage import lineage_run
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake

HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"
ROWS = "o1,c1,2018-09-01T08:45:00,s1,600,36,636\no2,c2,2018-09-01T09:00:00,s1,1100,66,1166\n"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A lineage endpoint on loopback that records what it is sent; it answers 503 to the
    first POST (a hiccup the client's transport must retry through)."""
    received: list[dict[str, Any]] = []
    refused: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not refused:
                refused.append(503)
                self.send_response(503)
                self.end_headers()
                return
            received.append(json.loads(body))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/lineage", received
    finally:
        server.shutdown()
        thread.join()


def materialize_orders(
    settings: LakehouseSettings, *, cleanse: bool = True
) -> dg.ExecuteInProcessResult:
    lake = Lake(settings)
    lake.put_landing_file("orders", "2026-11-01/083000000000-orders.csv", (HEADER + ROWS).encode())
    assets = [a for a in raw_assets if a.key == dg.AssetKey(["raw", "orders"])]
    if cleanse:
        assets += [a for a in cleansed_assets if a.key == dg.AssetKey(["cleansed", "orders"])]
    resource = LakehouseResource.from_settings(settings)
    return dg.materialize(assets, resources={"lakehouse": resource})


def test_events_reach_an_http_endpoint(
    local_settings: LakehouseSettings,
    receiver: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = receiver
    monkeypatch.setenv("LAKEHOUSE_OPENLINEAGE_URL", url)
    result = materialize_orders(local_settings)
    assert [(e["eventType"], e["job"]["name"]) for e in received] == [
        ("START", "raw.orders"),
        ("COMPLETE", "raw.orders"),
        ("START", "cleansed.orders"),
        ("COMPLETE", "cleansed.orders"),
    ]
    raw_done, cleansed_done = received[1], received[3]
    assert [(i["namespace"], i["name"]) for i in raw_done["inputs"]] == [
        ("file", f"{local_settings.lake_root}/landing/orders")
    ]
    (raw_out,) = raw_done["outputs"]
    assert raw_out["name"] == f"{local_settings.lake_root}/raw/orders"
    assert raw_out["outputFacets"]["outputStatistics"]["rowCount"] == 2
    assert "_source_file_uri" in {f["name"] for f in raw_out["facets"]["schema"]["fields"]}
    assert [o["name"].rsplit("/", 2)[-2:] for o in cleansed_done["outputs"]] == [
        ["cleansed", "orders"],
        ["quarantine", "orders"],
    ]
    # Built by the openlineage-python client: its facets carry its own producer and schema.
    facet = raw_out["facets"]["schema"]
    assert facet["_schemaURL"].startswith("https://openlineage.io/spec/facets/")
    assert raw_out["facets"]["version"]["datasetVersion"] == "0"
    for event in received:
        uuid.UUID(event["run"]["runId"])
        assert event["run"]["facets"]["parent"]["run"]["runId"] == result.run_id
        assert event["schemaURL"].startswith("https://openlineage.io/spec/")


def test_events_can_go_to_a_file_and_are_off_by_default(
    local_settings: LakehouseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LakehouseSettings().openlineage_url is None
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(openlineage.LineageEmitter, "send", lambda self, e: sent.append(e))
    materialize_orders(local_settings, cleanse=False)
    assert sent == []  # not configured: nothing is emitted

    monkeypatch.undo()
    events = tmp_path / "lineage" / "events.jsonl"
    monkeypatch.setenv("LAKEHOUSE_OPENLINEAGE_URL", f"file://{events}")
    other = LakehouseSettings(lake_root=str(tmp_path / "other"), work_dir=tmp_path / "w")
    materialize_orders(other, cleanse=False)
    kinds = [json.loads(line)["eventType"] for line in events.read_text().splitlines()]
    assert kinds == ["START", "COMPLETE"]


def test_a_failed_materialization_emits_fail(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    settings = LakehouseSettings(
        lake_root=str(tmp_path / "lake"), openlineage_url=f"file://{events}"
    )
    with (
        pytest.raises(RuntimeError),
        lineage_run(Lake(settings), str(uuid.uuid4()), "raw.orders", [], [("raw", "orders")]),
    ):
        raise RuntimeError("boom")
    assert [json.loads(x)["eventType"] for x in events.read_text().splitlines()] == [
        "START",
        "FAIL",
    ]


def test_only_http_and_file_targets_are_accepted() -> None:
    with pytest.raises(ValueError, match="openlineage_url"):
        LakehouseSettings(openlineage_url="kafka://broker/topic")


def test_mart_events_name_the_tables_each_model_reads() -> None:
    from lakehouse.defs.marts import dbt_project
    from lakehouse.marts import model_parents

    assert model_parents(dbt_project.manifest_path, "orders") == [
        ("cleansed", "orders"),
        ("marts", "order_items"),
    ]
    assert model_parents(dbt_project.manifest_path, "customers") == [
        ("cleansed", "customers"),
        ("cleansed", "tweets"),
        ("marts", "orders"),
    ]


def test_loading_the_definitions_does_not_import_the_client() -> None:
    """Off by default, and free when off: every build and the code server load the
    definitions, and the client's import alone is about 0.3 s."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, lakehouse.cli, lakehouse.definitions; "
            "print(sorted(m for m in sys.modules if m.startswith('openlineage')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
