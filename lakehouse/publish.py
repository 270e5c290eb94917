"""Write-audit-publish: the one place that decides which version of a table readers see.

A writer commits a new version of a gated table (cleansed, marts); the commit records
itself as ``WRITTEN`` (Delta app transaction). Readers keep reading the version last
``PUBLISHED`` until the new one is judged: ``judge`` verifies it against the table's
contract, records the verdict in the lake, then either publishes it (a commit marking it
``PUBLISHED``) or withdraws it (a restore to the published version, which becomes the
latest and is marked published again, with the cursors it had, so the withdrawn input is
judged again next time). Both decisions are commits on the snapshot that was judged: if
another process decided first, this one re-reads and defers to it.

A version left pending by a crash (killed between write and verdict) is judged by the
next process that touches the table (``audit_pending``), before anything reads it.

Verdicts live in the lake beside the tables (``_lakehouse/verdicts/<layer>/<table>.json``):
the newest judgement of each table, with every check's outcome, so a rerun with nothing
new reports the published version's checks without verifying it again, and the checks of
a mart candidate that was never published can still be shown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from lakehouse import delta
from lakehouse.contracts import Outcome, Verification, load_contract, verify
from lakehouse.faults import fault_point
from lakehouse.incremental_checks import VerifiedBase, verify_since
from lakehouse.storage import Lake, Layer

VERDICTS = "_lakehouse/verdicts"


def contract_fingerprint(layer: Layer | str, table: str) -> str:
    return hashlib.sha256(load_contract(layer, table).path.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckVerdict:
    """One check's outcome, as stored (``contracts.CheckOutcome`` flattened)."""

    name: str
    type: str
    column: str | None
    outcome: str
    action: str
    blocking: bool
    description: str
    failing_rows: int | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome == Outcome.FAILED.value

    @property
    def passed(self) -> bool:
        return self.outcome in (Outcome.PASSED.value, Outcome.EXCLUDED.value)


@dataclass(frozen=True)
class Verdict:
    """The judgement of one table version (``version`` None: a candidate never written)."""

    layer: str
    table: str
    version: int | None
    published: bool
    checks: list[CheckVerdict]
    reference_versions: dict[str, int]
    contract: str
    run_id: str
    judged_at: str
    restored_to: int | None = None
    note: str = ""
    scope: str = ""
    """Which rows the checks read: empty for the whole version (``Verification.scope``)."""

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.table}"

    @property
    def blocking_failures(self) -> list[CheckVerdict]:
        return [c for c in self.checks if c.failed and c.blocking]

    def describe(self) -> str:
        where = f"{self.name} v{self.version}" if self.version is not None else self.name
        if self.published:
            return f"{where}: published ({len(self.checks)} checks passed or warned)"
        failed = ", ".join(c.name for c in self.blocking_failures) or self.note
        return f"{where}: rejected ({failed})"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        data = json.loads(text)
        data["checks"] = [CheckVerdict(**c) for c in data["checks"]]
        return cls(**data)

    @classmethod
    def of(
        cls,
        verification: Verification,
        version: int | None,
        run_id: str,
        *,
        published: bool | None = None,
        note: str = "",
    ) -> Verdict:
        contract = verification.contract
        checks = [
            CheckVerdict(
                name=o.check.name,
                type=o.check.type,
                column=o.check.column,
                outcome=o.outcome.value,
                action=o.check.action.value,
                blocking=o.check.blocking,
                description=o.summary or o.check.description or "",
                failing_rows=o.failing_rows,
                diagnostics={
                    k: float(v) for k, v in o.diagnostics.items() if isinstance(v, int | float)
                },
                sample=o.sample,
            )
            for o in verification.outcomes
        ]
        return cls(
            layer=contract.layer.value,
            table=contract.table,
            version=version,
            published=verification.passed if published is None else published,
            checks=checks,
            reference_versions=dict(verification.versions),
            contract=contract_fingerprint(contract.layer, contract.table),
            run_id=run_id,
            judged_at=datetime.now(UTC).isoformat(),
            note=note,
            scope=verification.scope,
        )


def verdict_uri(lake: Lake, layer: Layer | str, table: str) -> str:
    return lake.uri(VERDICTS, str(layer), f"{table}.json")


def save_verdict(lake: Lake, verdict: Verdict) -> None:
    lake.write_object(verdict_uri(lake, verdict.layer, verdict.table), verdict.to_json().encode())


def load_verdict(lake: Lake, layer: Layer | str, table: str) -> Verdict | None:
    data = lake.read_object(verdict_uri(lake, layer, table))
    return None if data is None else Verdict.from_json(data.decode())


def current_verdict(lake: Lake, layer: Layer, table: str, run_id: str) -> Verdict | None:
    """The verdict of the version readers see, verified now only if no stored verdict
    covers it (another version, or an edited contract). None: nothing published."""
    version = lake.input_version(layer, table)
    if version is None:
        return None
    stored = covering_verdict(lake, layer, table, version)
    if stored is not None:
        return stored
    verification = _verify(lake, layer, table, version, None)
    verdict = Verdict.of(verification, version, run_id, published=True)
    if not lake.reads_prod(layer, table):
        save_verdict(lake, verdict)
    return verdict


def covering_verdict(lake: Lake, layer: Layer, table: str, version: int) -> Verdict | None:
    """The stored verdict, if it judged ``version``'s data against today's contract."""
    stored = load_verdict(lake, layer, table)
    if (
        stored is not None
        and stored.published
        and stored.contract == contract_fingerprint(layer, table)
        and stored.version is not None
        and _same_data(lake, layer, table, stored.version, version)
    ):
        return stored
    return None


def _same_data(lake: Lake, layer: Layer, table: str, judged: int, readable: int) -> bool:
    """Whether ``readable`` holds the data of ``judged``: equal, or only commits that change
    no data (publish markers, compaction, vacuum) lie between them."""
    if judged == readable:
        return True
    if judged > readable:
        return False
    dt = lake.published_table(layer, table, readable)
    if dt is None:
        return False
    state = delta.table_state(dt)
    return state.written is not None and state.written <= judged and not state.pending


def _verify(
    lake: Lake,
    layer: Layer,
    table: str,
    version: int,
    reference_versions: Mapping[str, int] | None,
) -> Verification:
    """Verify a version by what it added to the version the stored verdict judged, when
    that verdict holds against today's contract (``incremental_checks``), else whole."""
    stored = load_verdict(lake, layer, table)
    if (
        stored is not None
        and stored.version is not None
        and stored.version < version
        and stored.contract == contract_fingerprint(layer, table)
        and not lake.reads_prod(layer, table)
    ):
        verification = verify_since(
            lake, layer, table, version, _base(stored), reference_versions=reference_versions
        )
        if verification is not None:
            return verification
    return verify(lake, layer, table, version, reference_versions=reference_versions)


def _base(verdict: Verdict) -> VerifiedBase:
    """What a judged version's verdict says still holds for the rows a later one keeps."""
    assert verdict.version is not None
    return VerifiedBase(
        version=verdict.version,
        passed=frozenset(c.name for c in verdict.checks if c.outcome == Outcome.PASSED.value),
        reference_versions=verdict.reference_versions,
    )


def verified_base(lake: Lake, layer: Layer, table: str, version: int) -> VerifiedBase | None:
    """``version`` of this lake's own table as a base to verify a newer version by what it
    added: only if a stored verdict judged its data against today's contract."""
    stored = covering_verdict(lake, layer, table, version)
    if stored is None or lake.reads_prod(layer, table):
        return None
    return replace(_base(stored), version=version)


def judge(
    lake: Lake,
    layer: Layer,
    table: str,
    version: int,
    stamp: delta.Stamp,
    *,
    reference_versions: Mapping[str, int] | None = None,
    cursor_apps: tuple[str, ...] = (),
) -> Verdict:
    """Verify a written version and publish or withdraw it (see the module docstring).

    ``cursor_apps`` are the table's cursors: a withdrawal puts them back where they were
    at the published version. Raises ``contracts.VerificationError`` (nothing decided)
    when the data cannot be judged.
    """
    verification = _verify(lake, layer, table, version, reference_versions)
    verdict = Verdict.of(verification, version, stamp.run_id)
    save_verdict(lake, verdict)
    target = lake.writable(layer, table)

    def decide() -> Verdict:
        snapshot = target.snapshot()
        state = snapshot.state()
        if state is None or state.written != version or not state.pending:
            why = (
                "decided by another process" if state and state.written == version else "superseded"
            )
            published = state is not None and state.published == version
            return replace(verdict, published=published, note=why)
        if verdict.published:
            fault_point("check.before_publish", table)
            snapshot.mark(
                stamp,
                txns={delta.PUBLISHED: version, **delta.clear_rejection(snapshot)},
                extra={delta.PUBLISHED_VERSION_KEY: version},
            )
            fault_point("check.after_publish", table)
            return verdict
        fault_point("check.before_reject", table)
        restored = _withdraw(snapshot, state, version, stamp, verdict, cursor_apps)
        return replace(verdict, restored_to=restored)

    return delta.retry_on_conflict(decide, f"publishing {layer.value}/{table}")


def _withdraw(
    snapshot: delta.Snapshot,
    state: delta.TableState,
    rejected: int,
    stamp: delta.Stamp,
    verdict: Verdict,
    cursor_apps: tuple[str, ...],
) -> int | None:
    """Restore the published version (or an empty table if none) as a new, published commit."""
    good = state.published
    before = None if good is None else snapshot.target.open(good)
    cursors = {
        app: (before.transaction_version(app) if before is not None else None)
        for app in cursor_apps
    }
    restored = snapshot.next_version
    txns = {delta.WRITTEN: restored, delta.PUBLISHED: restored, delta.REJECTED: rejected}
    txns |= {app: -1 if v is None else v for app, v in cursors.items()}
    reason = ", ".join(c.name for c in verdict.blocking_failures)
    snapshot.restore(
        good,
        stamp,
        txns=txns,
        extra={delta.REJECTED_KEY: str(rejected), delta.REJECTED_BECAUSE_KEY: reason},
    )
    return good


def audit_pending(
    lake: Lake,
    layer: Layer,
    table: str,
    stamp: delta.Stamp,
    *,
    cursor_apps: tuple[str, ...] = (),
) -> Verdict | None:
    """Judge a version left written but not judged (a crash between write and verdict)."""
    dt = lake.writable(layer, table).open()
    if dt is None:
        return None
    state = delta.table_state(dt)
    if not state.pending or state.written is None:
        return None
    stored = load_verdict(lake, layer, table)
    references = stored.reference_versions if stored and stored.version == state.written else None
    return judge(
        lake,
        layer,
        table,
        state.written,
        stamp,
        reference_versions=references,
        cursor_apps=cursor_apps,
    )
