"""Branch deployments: the prod versions a pull request reads, and its teardown.

A branch lake (``Lake`` with a branch environment) reads every table it has not rebuilt
from prod at the version recorded in ``branches/pr-N/_branch/pins.json`` when the branch
was first used, so reruns see the same prod data however prod moves on. ``refresh_pins``
moves the pins to prod's current versions on demand.

Teardown works from the prod (or local) lake and deletes exactly ``branches/pr-N/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lakehouse import audit, delta
from lakehouse.pins import PINS_FILE, PROD_MANIFEST, BranchPins, snapshot
from lakehouse.settings import BRANCH_NAME, branch_name
from lakehouse.storage import BRANCHES, Lake


def branch_lake(lake: Lake, pull_request: int | None) -> Lake:
    """The branch to act on: this lake if it is one (``pull_request`` None or its own),
    else pull request N's branch over this lake's prod root."""
    if lake.is_branch:
        if pull_request not in (None, lake.environment.pull_request):
            raise ValueError(f"{lake.environment} cannot act on pull request {pull_request}")
        return lake
    if pull_request is None:
        raise ValueError("a pull request number is needed outside a branch deployment")
    return lake.branch(pull_request)


def refresh_pins(lake: Lake, stamp: delta.Stamp | None = None) -> tuple[BranchPins, BranchPins]:
    """Re-pin the branch to prod's current versions; returns (before, after). A move is
    recorded in the branch's audit trail (what the branch reads has changed).

    Tables the branch has built itself stay as they are: rebuild them to pick up prod's news.
    """
    before = lake.pins
    lake.write_object(lake.uri(PINS_FILE), snapshot(lake, before.created_at).to_json().encode())
    lake.__dict__.pop("pins", None)  # the cached_property re-reads them
    after = lake.pins
    moved = {
        t: [before.tables.get(t), v] for t, v in after.tables.items() if before.tables.get(t) != v
    }
    if moved:
        audit.record_event(
            lake,
            stamp or lake.stamp(_direct_run_id(), "branch/pins"),
            audit.Action.REPIN,
            lake.uri(PINS_FILE),
            details={"moved": moved},
        )
    return before, after


def _direct_run_id() -> str:
    """The run id of a change made by calling the library directly (no Dagster run)."""
    return "direct-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def prod_manifest_dir(lake: Lake, folder: Path) -> Path | None:
    """``folder``, holding prod's pinned dbt manifest (for ``--state``), if prod had one."""
    data = lake.read_object(lake.uri(PROD_MANIFEST))
    if data is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_bytes(data)
    return folder


def vacuum_retention(lake: Lake, wanted: timedelta, now: datetime | None = None) -> timedelta:
    """The retention prod's vacuum may use without deleting files a branch's pins still read.

    A branch pinned ten days ago reads versions whose files a 7-day vacuum would delete;
    the retention is stretched to cover the oldest pin (plus an hour of slack).
    """
    now = now or datetime.now(UTC)
    oldest = None
    for info in list_branches(lake):
        data = lake.read_object(lake.prod_uri(BRANCHES, info.name, PINS_FILE))
        if data is None:
            continue
        pinned_at = datetime.fromisoformat(json.loads(data)["pinned_at"])
        oldest = pinned_at if oldest is None else min(oldest, pinned_at)
    if oldest is None:
        return wanted
    return max(wanted, now - oldest + timedelta(hours=1))


@dataclass(frozen=True)
class BranchInfo:
    name: str
    objects: int
    bytes: int
    last_activity: datetime


@dataclass(frozen=True)
class Deletion:
    """What a teardown removed."""

    branch: str
    prefix: str
    objects: int
    last_activity: datetime | None = None

    def describe(self) -> str:
        idle = ""
        if self.last_activity is not None:
            idle = f", last written {self.last_activity:%Y-%m-%d %H:%M} UTC"
        return f"deleted {self.prefix}/ ({self.objects} objects{idle})"


def list_branches(lake: Lake) -> list[BranchInfo]:
    """Every pr-N folder under branches/, with its size and latest write."""
    base = lake.prod_uri(BRANCHES)
    totals: dict[str, tuple[int, int, datetime]] = {}
    for obj in lake.iter_objects(base):
        name = obj.uri[len(base) + 1 :].split("/", 1)[0]
        if BRANCH_NAME.match(name) is None:
            continue  # not ours to judge: never listed, never deleted
        n, size, last = totals.get(name, (0, 0, obj.last_modified))
        totals[name] = (n + 1, size + obj.size, max(last, obj.last_modified))
    return [BranchInfo(name, n, size, last) for name, (n, size, last) in sorted(totals.items())]


def _delete(
    lake: Lake, name: str, stamp: delta.Stamp | None, last_activity: datetime | None = None
) -> Deletion:
    """Delete a branch's folder; a deletion that removed anything is recorded in this
    (prod's) audit trail, since the branch's own trail goes with it."""
    objects = lake.delete_branch(name)
    deletion = Deletion(name, lake.prod_uri(BRANCHES, name), objects, last_activity)
    if objects:
        audit.record_event(
            lake,
            stamp or lake.stamp(_direct_run_id(), f"{BRANCHES}/{name}"),
            audit.Action.TEARDOWN,
            f"{BRANCHES}/{name}",
            details={"objects_deleted": objects, "last_activity": last_activity},
        )
    return deletion


def teardown(lake: Lake, pull_request: int, stamp: delta.Stamp | None = None) -> Deletion:
    """Delete the branch of a closed pull request (``branches/pr-N/`` exactly)."""
    return _delete(lake, branch_name(pull_request), stamp)


def remove_idle_branches(
    lake: Lake,
    idle_for: timedelta,
    now: datetime | None = None,
    stamp: delta.Stamp | None = None,
) -> list[Deletion]:
    """Delete every branch nothing has written to for longer than ``idle_for``."""
    now = now or datetime.now(UTC)
    return [
        _delete(lake, info.name, stamp, info.last_activity)
        for info in list_branches(lake)
        if now - info.last_activity > idle_for
    ]
