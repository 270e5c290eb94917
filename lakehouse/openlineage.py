"""Optional OpenLineage run events for every materialization (off unless configured).

``LAKEHOUSE_OPENLINEAGE_URL`` set to an ``http(s)://`` endpoint (e.g. Marquez's
``/api/v1/lineage``) POSTs each event; set to ``file:///path/events.jsonl`` it appends them
as JSON lines. Each table materialization is one OpenLineage run (START, then COMPLETE or
FAIL) whose parent is the Dagster run. Lineage is observability: a failure to deliver an
event is logged, never fails the pipeline.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lakehouse import delta
from lakehouse.storage import Lake, Layer

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/lakehouse/lakehouse"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"
RUN_NAMESPACE = uuid.UUID("6f1d8c1e-2f3a-4c4e-9a57-3c2b1d0e9f10")
TABLE_LAYERS = frozenset(item.value for item in Layer)
"""Layers holding Delta tables (``landing`` holds files)."""
Dataset = tuple[str, str]
"""(layer or "landing", table or source)."""


def dataset_ref(lake: Lake, layer: str, name: str, *, read: bool = False) -> dict[str, str]:
    """OpenLineage naming: ``s3://bucket`` + key path on S3, ``file`` + absolute path locally.

    An input a branch reads from prod is named as prod's table: that is what it read.
    """
    uri = lake.uri(layer, name)
    if read and lake.is_branch and layer in TABLE_LAYERS:
        uri = lake.input_table(layer, name).uri
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return {"namespace": f"s3://{bucket}", "name": key}
    return {"namespace": "file", "name": uri}


def _output_facets(lake: Lake, layer: str, name: str) -> dict[str, Any]:
    if layer not in TABLE_LAYERS:
        return {}
    dt = delta.open_table(lake.table_uri(layer, name), lake.storage_options)
    if dt is None:
        return {}
    common = {"_producer": PRODUCER}
    fields = [{"name": f.name, "type": str(f.type)} for f in dt.schema().fields]
    return {
        "facets": {
            "schema": {
                **common,
                "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json",
                "fields": fields,
            },
            "version": {
                **common,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json",
                "datasetVersion": str(dt.version()),
            },
        },
        "outputFacets": {
            "outputStatistics": {
                **common,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json",
                "rowCount": delta.row_count(dt),
            }
        },
    }


class LineageEmitter:
    def __init__(self, target: str, namespace: str) -> None:
        self.target = target
        self.namespace = namespace

    def send(self, event: dict[str, Any]) -> None:
        body = json.dumps(event, default=str)
        try:
            if self.target.startswith("file://"):
                path = Path(self.target.removeprefix("file://"))
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as fh:
                    fh.write(body + "\n")
            elif self.target.startswith(("http://", "https://")):
                request = urllib.request.Request(
                    self.target, data=body.encode(), headers={"Content-Type": "application/json"}
                )
                # http(s) only (bandit B310)
                urllib.request.urlopen(request, timeout=10).close()  # nosec B310
            else:
                raise OSError(f"not an http(s):// or file:// URL: {self.target}")
        except OSError as exc:
            log.warning(f"OpenLineage event not delivered to {self.target}: {exc}")


@contextmanager
def lineage_run(
    lake: Lake,
    dagster_run_id: str,
    job: str,
    inputs: Sequence[Dataset],
    outputs: Sequence[Dataset],
) -> Iterator[None]:
    """Emit START before the block and COMPLETE (with schema, version, row count) or FAIL
    after it, when OpenLineage is configured; otherwise do nothing."""
    target = lake.settings.openlineage_url
    if not target:
        yield
        return
    emitter = LineageEmitter(target, lake.settings.openlineage_namespace)
    run_id = str(uuid.uuid5(RUN_NAMESPACE, f"{dagster_run_id}/{job}"))

    def event(kind: str, with_facets: bool) -> dict[str, Any]:
        return {
            "eventType": kind,
            "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
            "run": {
                "runId": run_id,
                "facets": {
                    "parent": {
                        "_producer": PRODUCER,
                        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json",
                        "run": {"runId": dagster_run_id},
                        "job": {"namespace": emitter.namespace, "name": "dagster"},
                    }
                },
            },
            "job": {"namespace": emitter.namespace, "name": job},
            "inputs": [dataset_ref(lake, layer, name, read=True) for layer, name in inputs],
            "outputs": [
                {
                    **dataset_ref(lake, layer, name),
                    **(_output_facets(lake, layer, name) if with_facets else {}),
                }
                for layer, name in outputs
            ],
        }

    emitter.send(event("START", with_facets=False))
    try:
        yield
    except BaseException:
        emitter.send(event("FAIL", with_facets=False))
        raise
    emitter.send(event("COMPLETE", with_facets=True))
