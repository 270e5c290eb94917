"""Optional OpenLineage run events for every materialization (off unless configured).

``LAKEHOUSE_OPENLINEAGE_URL`` set to an ``http(s)://`` endpoint (e.g. Marquez's
``/api/v1/lineage``) POSTs each event; set to ``file:///path/events.jsonl`` it appends them
as JSON lines. Events, facets and both transports (retries, timeouts) are the
``openlineage-python`` client's own. Each table materialization is one OpenLineage run (START, then COMPLETE or
FAIL) whose parent is the Dagster run. Lineage is observability: a failure to deliver an
event is logged, never fails the pipeline.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lakehouse import delta
from lakehouse.storage import Lake, Layer

# The client is imported where an event is made: every process that loads the
# definitions (each build, the code server) would otherwise pay for importing it (about
# 0.3 s), and most deployments never configure an endpoint.
if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset, RunEvent
    from openlineage.client.transport import Transport

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/lakehouse/lakehouse"
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


def _input(lake: Lake, layer: str, name: str) -> InputDataset:
    from openlineage.client.event_v2 import InputDataset

    ref = dataset_ref(lake, layer, name, read=True)
    return InputDataset(ref["namespace"], ref["name"])


def _output(lake: Lake, layer: str, name: str, with_facets: bool) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        output_statistics_output_dataset,
        schema_dataset,
    )

    ref = dataset_ref(lake, layer, name)
    dt = (
        delta.open_table(lake.table_uri(layer, name), lake.storage_options)
        if with_facets and layer in TABLE_LAYERS
        else None
    )
    if dt is None:
        return OutputDataset(ref["namespace"], ref["name"])
    fields = [
        schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type))
        for f in dt.schema().fields
    ]
    return OutputDataset(
        ref["namespace"],
        ref["name"],
        facets={
            "schema": schema_dataset.SchemaDatasetFacet(fields=fields),
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(dt.version())
            ),
        },
        outputFacets={
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=delta.row_count(dt)
            )
        },
    )


RETRY = {
    "total": 3,
    "connect": 3,
    "read": 3,
    "backoff_factor": 0.5,
    "status_forcelist": [429, 500, 502, 503, 504],
    "allowed_methods": ["POST"],
}
"""An endpoint that hiccups gets three more tries; one that is down costs seconds, not
minutes (the library's default is five tries)."""


def transport(target: str) -> Transport:
    """The client's own transport for ``target``: HTTP (with retries and a timeout) for an
    ``http(s)://`` endpoint, its file transport (JSON lines, appended) for ``file://``."""
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    if target.startswith("file://"):
        path = Path(target.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    parsed = urlsplit(target)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"not an http(s):// or file:// URL: {target}")
    config = HttpConfig(
        url=f"{parsed.scheme}://{parsed.netloc}",
        endpoint=parsed.path.lstrip("/") + (f"?{parsed.query}" if parsed.query else ""),
        timeout=10.0,
        retry=RETRY,
    )
    return HttpTransport(config)


class LineageEmitter:
    """Sends run events through the OpenLineage client; a delivery failure is logged."""

    def __init__(self, target: str, namespace: str) -> None:
        from openlineage.client import OpenLineageClient

        self.target = target
        self.namespace = namespace
        self.client = OpenLineageClient(transport=transport(target))

    def send(self, event: RunEvent) -> None:
        try:
            self.client.emit(event)
        except Exception as exc:  # lineage is observability: never fail the pipeline
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
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import parent_run

    emitter = LineageEmitter(target, lake.settings.openlineage_namespace)
    run_id = str(uuid.uuid5(RUN_NAMESPACE, f"{dagster_run_id}/{job}"))

    def event(kind: RunState, with_facets: bool) -> RunEvent:
        parent = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=dagster_run_id),
            job=parent_run.Job(namespace=emitter.namespace, name="dagster"),
        )
        return RunEvent(
            eventType=kind,
            eventTime=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            run=Run(runId=run_id, facets={"parent": parent}),
            job=Job(namespace=emitter.namespace, name=job),
            producer=PRODUCER,
            inputs=[_input(lake, layer, name) for layer, name in inputs],
            outputs=[_output(lake, layer, name, with_facets) for layer, name in outputs],
        )

    emitter.send(event(RunState.START, with_facets=False))
    try:
        yield
    except BaseException:
        emitter.send(event(RunState.FAIL, with_facets=False))
        raise
    emitter.send(event(RunState.COMPLETE, with_facets=True))
