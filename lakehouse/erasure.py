"""Right to erasure: remove one customer from every layer, and make the old bytes unreadable.

A customer's rows are found by their id: the tables that hold a customer id (customers,
orders, tweets; raw and quarantine under the landed names ``id``, ``customer``,
``user_id``), and the tables linked to them through an order (items, order items).
``erase_customer`` works in three phases, each idempotent, so a rerun after a crash
finishes the job and a rerun after success changes nothing:

1. **Delete** the rows, children first (items before orders, so the order ids that link
   them can still be found on a rerun), in raw, quarantine and cleansed. Each DELETE is
   one commit stamped ``erasure`` with the reason and the subject as a keyed hash (never in
   clear); a cleansed table is published in the same commit (removing rows cannot break a
   row rule). A table with a version pending audit is refused: build first.
2. **Rebuild** the marts (the caller's function: a planned build), so aggregates no longer
   count the person. Policy for orders: *delete*, not anonymize: their orders, items and
   revenue leave the marts.
3. **Purge** the old bytes: every Parquet file under every table (old versions' data files
   and ``_change_data/``, which vacuum would keep for time travel) that still holds the
   id is deleted, with every version a versioned bucket keeps; so are the landed files
   that hold it (raw keeps every other row of them, and its ingest log still says they
   were loaded, so nothing is ingested twice), and the samples in stored verdicts.
   Time travel to a version older than the erasure then fails for the tables it touched
   (their files are gone), which is the point. The Delta logs never held the id or the
   name: those columns are kept out of file statistics (``subject_key_columns``).

A branch reads prod at pinned versions: after an erasure in prod, a pin older than it
points at purged files and fails to read rather than resurrect the person; refresh the
branch's pins (``lakehouse branch pins --refresh``) or tear it down. A branch's own
tables are the branch's to erase (``lakehouse erase`` run in the branch).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import polars as pl
import pyarrow.parquet as pq

from lakehouse import audit, delta
from lakehouse.faults import fault_point
from lakehouse.ingest import LandedFileError, read_landed
from lakehouse.sources import SOURCE_FILE_URI, SOURCE_ROW_NUMBER, SOURCES
from lakehouse.storage import Lake, Layer

CUSTOMER_ID = "customer_id"
ORDER_ID = "order_id"
SUBJECT_KEY = audit.SUBJECT_KEY
ERASED_LAYERS = (Layer.RAW, Layer.QUARANTINE, Layer.CLEANSED)


def _landed(source: str, cleansed: str) -> str | None:
    """The landed name of the column that becomes ``cleansed`` in ``source``."""
    return next((c.landed for c in SOURCES[source].columns if c.cleansed == cleansed), None)


def subject_key_columns(layer: Layer | str, table: str) -> frozenset[str]:
    """Columns holding a customer id: kept out of Delta file statistics like PII, so the
    log never holds an id an erasure has to remove."""
    layer = Layer(layer)
    if layer in (Layer.RAW, Layer.QUARANTINE):
        name = _landed(table, CUSTOMER_ID) if table in SOURCES else None
        return frozenset({name}) if name else frozenset()
    return frozenset({CUSTOMER_ID})


@dataclass(frozen=True)
class Link:
    """How a table's rows belong to the subject: ``column`` equals the customer id, or
    (``by_order``) holds one of the subject's order ids."""

    layer: Layer
    table: str
    column: str
    by_order: bool


def links() -> list[Link]:
    """Every table an erasure deletes from, in the order it does: rows linked by an order
    first, then rows naming the customer, the customers themselves last (a rerun after a
    crash can still find the orders and the names it needs)."""
    by_order: list[Link] = []
    by_customer: list[Link] = []
    for layer in ERASED_LAYERS:
        for name in sorted(SOURCES, key=lambda n: n == "customers"):
            customer = _landed(name, CUSTOMER_ID)
            if customer is not None:
                column = customer if layer is not Layer.CLEANSED else CUSTOMER_ID
                by_customer.append(Link(layer, name, column, by_order=False))
            elif name != "orders" and _landed(name, ORDER_ID) is not None:
                by_order.append(Link(layer, name, ORDER_ID, by_order=True))
    return by_order + sorted(by_customer, key=lambda link: link.table == "customers")


def subject_hash(lake: Lake, customer_id: str) -> str:
    """The subject as the audit trail records it: a keyed hash, never the id in clear."""
    return hmac.new(lake.settings.pii_key(), customer_id.encode(), hashlib.sha256).hexdigest()


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _where_rows(rows: pl.DataFrame) -> str:
    """A DELETE predicate naming rows by where they were landed (file, row number), never
    by the id: delta-rs records the predicate in the commit, which outlives the rows."""
    parts = []
    for (uri,), group in rows.group_by([SOURCE_FILE_URI], maintain_order=True):
        numbers = ", ".join(str(int(n)) for n in sorted(group[SOURCE_ROW_NUMBER].unique()))
        parts.append(
            f'("{SOURCE_FILE_URI}" = {_quoted(str(uri))} AND "{SOURCE_ROW_NUMBER}" IN ({numbers}))'
        )
    return " OR ".join(parts)


def _read(lake: Lake, layer: Layer, table: str, columns: list[str]) -> pl.DataFrame | None:
    dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
    if dt is None:
        return None
    present = [c for c in columns if c in dt.schema().to_arrow().names]
    if not present:
        return None
    return pl.from_arrow(dt.to_pyarrow_table(columns=present))  # type: ignore[return-value]


def _order_ids(lake: Lake, customer_id: str) -> set[str]:
    """The subject's orders, wherever an order row still names them."""
    ids: set[str] = set()
    for layer in ERASED_LAYERS:
        raw_names = layer is not Layer.CLEANSED
        customer = _landed("orders", CUSTOMER_ID) if raw_names else CUSTOMER_ID
        order = _landed("orders", ORDER_ID) if raw_names else ORDER_ID
        assert customer and order
        rows = _read(lake, layer, "orders", [customer, order])
        if rows is not None and customer in rows.columns and order in rows.columns:
            ids |= set(rows.filter(pl.col(customer) == customer_id)[order].drop_nulls())
    return ids


def _names(lake: Lake, customer_id: str) -> set[str]:
    """The subject's names as delivered (every re-delivery), to find them in text."""
    from lakehouse.contracts import pii_columns

    id_column = _landed("customers", CUSTOMER_ID)
    assert id_column
    columns = sorted(pii_columns(Layer.RAW, "customers"))
    rows = _read(lake, Layer.RAW, "customers", [id_column, *columns])
    if rows is None or id_column not in rows.columns:
        return set()
    mine = rows.filter(pl.col(id_column) == customer_id)
    return {v for c in columns if c in mine.columns for v in mine[c].drop_nulls() if v}


@dataclass
class ErasureReport:
    subject: str
    """The keyed hash, as recorded."""
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_purged: list[str] = field(default_factory=list)
    landed_files_deleted: list[str] = field(default_factory=list)
    verdicts_scrubbed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            any(self.rows_deleted.values())
            or self.files_purged
            or self.landed_files_deleted
            or self.verdicts_scrubbed
        )

    def describe(self) -> str:
        if not self.changed:
            return f"subject {self.subject[:12]}…: nothing left to erase"
        rows = ", ".join(f"{t} {n}" for t, n in sorted(self.rows_deleted.items()) if n)
        return (
            f"subject {self.subject[:12]}…: rows deleted: {rows or 'none'}; "
            f"{len(self.files_purged)} old table file(s), "
            f"{len(self.landed_files_deleted)} landed file(s) and "
            f"{len(self.verdicts_scrubbed)} verdict(s) purged"
        )


def delete_rows(
    lake: Lake, customer_id: str, stamp: delta.Stamp, report: ErasureReport
) -> set[str]:
    """Phase 1: the subject's rows out of raw, quarantine and cleansed; returns the order
    ids found (the purge looks for them too)."""
    order_ids = _order_ids(lake, customer_id)
    extra = {SUBJECT_KEY: report.subject}
    for link in links():
        values = order_ids if link.by_order else {customer_id}
        if not values:
            continue
        target = lake.writable(link.layer, link.table)

        def attempt(
            link: Link = link, target: delta.WritableTable = target, values: set[str] = values
        ) -> int:
            snapshot = target.snapshot()
            if snapshot.dt is None or link.column not in snapshot.dt.schema().to_arrow().names:
                return 0
            state = delta.table_state(snapshot.dt)
            if target.gated and state.pending:
                raise RuntimeError(
                    f"{link.layer}/{link.table}: v{state.written} is pending audit; "
                    "run a build before erasing"
                )
            data = pl.from_arrow(
                snapshot.dt.to_pyarrow_table(
                    columns=[link.column, SOURCE_FILE_URI, SOURCE_ROW_NUMBER]
                )
            )
            assert isinstance(data, pl.DataFrame)
            mine = data.filter(pl.col(link.column).cast(pl.String).is_in(list(values)))
            if mine.height == 0:
                return 0
            txns = {delta.PUBLISHED: snapshot.next_version} if target.gated else {}
            return snapshot.delete(_where_rows(mine), stamp, txns=txns, extra=extra)

        name = f"{link.layer}/{link.table}"
        report.rows_deleted[name] = delta.retry_on_conflict(attempt, f"erasing from {name}")
        fault_point("erase.after_delete", name)
    return order_ids


def _parquet_holds(data: bytes, wanted: Mapping[str, set[str]]) -> bool:
    """Whether a Parquet file holds any of ``wanted``'s values in its column."""
    names = pq.read_schema(io.BytesIO(data)).names
    columns = [c for c in wanted if c in names and wanted[c]]
    if not columns:
        return False
    found = pl.read_parquet(io.BytesIO(data), columns=columns)
    return any(found[c].cast(pl.String).is_in(list(wanted[c])).any() for c in columns)


def _landed_holds(uri: str, data: bytes, needles: list[str]) -> bool:
    """Whether a landed file names the subject, read as ingestion reads it (so gzip and
    Parquet are decoded too); a file ingestion could not read is searched as bytes."""
    try:
        rows = read_landed(uri, data)
    except LandedFileError:
        return any(n.encode() in data for n in needles)
    return any(rows[c].cast(pl.String).str.contains_any(needles).any() for c in rows.columns)


def _holders(lake: Lake, customer_id: str, order_ids: set[str]) -> dict[str, dict[str, set[str]]]:
    """Per table URI whose files may hold the subject, the values to look for per column:
    the customer id, or their order ids in a table linked by order."""
    from lakehouse.catalog import mart_names

    wanted: dict[str, dict[str, set[str]]] = {}
    for link in links():
        values = order_ids if link.by_order else {customer_id}
        wanted.setdefault(lake.table_uri(link.layer, link.table), {})[link.column] = values
    for mart in mart_names():
        wanted[lake.table_uri(Layer.MARTS, mart)] = {
            CUSTOMER_ID: {customer_id},
            ORDER_ID: order_ids,
        }
    return wanted


def purge(
    lake: Lake, customer_id: str, order_ids: set[str], names: set[str], report: ErasureReport
) -> None:
    """Phase 3: delete every object (and object version) still holding the subject."""
    for uri, wanted in _holders(lake, customer_id, order_ids).items():
        dt = delta.open_table(uri, lake.storage_options)
        current = set() if dt is None else {f.split("://")[-1] for f in dt.file_uris()}
        for obj in lake.iter_objects(uri):
            if not obj.uri.endswith(".parquet") or "/_delta_log/" in obj.uri:
                continue
            if obj.uri.split("://")[-1] in current:
                continue  # the current version: phase 1 deleted the rows from it
            if _parquet_holds(lake.read_bytes(obj.uri), wanted):
                lake.delete_object_everywhere(obj.uri)
                report.files_purged.append(obj.uri)
    needles = [customer_id, *names]
    for source in SOURCES:
        for landed in lake.list_landing(source):
            if not landed.uri.startswith(lake.root + "/"):
                continue  # a branch reads prod's landing: prod's erasure deletes those
            if _landed_holds(landed.uri, lake.read_bytes(landed.uri), needles):
                lake.delete_object_everywhere(landed.uri)
                report.landed_files_deleted.append(landed.uri)
    _scrub_verdicts(lake, [n.encode() for n in needles], report)


def _scrub_verdicts(lake: Lake, needles: list[bytes], report: ErasureReport) -> None:
    """Stored verdicts keep failing-row samples: drop the samples that name the subject."""
    from lakehouse.publish import VERDICTS, Verdict

    for obj in lake.iter_objects(lake.uri(VERDICTS)):
        data = lake.read_bytes(obj.uri)
        if not any(n in data for n in needles):
            continue
        verdict = Verdict.from_json(data.decode())
        checks = [
            replace(c, sample=[])
            if any(n.decode() in json.dumps(c.sample, default=str) for n in needles)
            else c
            for c in verdict.checks
        ]
        scrubbed = replace(verdict, checks=checks).to_json().encode()
        lake.delete_object_everywhere(obj.uri)
        lake.write_object(obj.uri, scrubbed)
        report.verdicts_scrubbed.append(obj.uri)


def erase_customer(
    lake: Lake,
    customer_id: str,
    stamp: delta.Stamp,
    rebuild_marts: Callable[[], bool],
) -> ErasureReport:
    """Erase one customer everywhere (see the module's docstring); safe to rerun."""
    if not customer_id.strip():
        raise ValueError("which customer? the id is empty")
    if not stamp.reason.strip():
        raise ValueError("say why: the reason is recorded in the audit trail")
    report = ErasureReport(subject_hash(lake, customer_id))
    stamp = replace(stamp, action=audit.Action.ERASURE.value)
    names = _names(lake, customer_id)
    order_ids = delete_rows(lake, customer_id, stamp, report)
    if not rebuild_marts():
        raise RuntimeError("the marts could not be rebuilt: rerun the erasure after fixing it")
    purge(lake, customer_id, order_ids, names, report)
    if report.changed:
        audit.record_event(
            lake,
            stamp,
            audit.Action.ERASURE,
            "customer",
            rows_affected=sum(report.rows_deleted.values()),
            details={
                "subject": report.subject,
                "rows_deleted": report.rows_deleted,
                "files_purged": len(report.files_purged),
                "landed_files_deleted": report.landed_files_deleted,
                "verdicts_scrubbed": report.verdicts_scrubbed,
            },
        )
    return report
