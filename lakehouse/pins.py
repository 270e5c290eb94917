"""A branch's pins: the prod Delta version of every table a branch reads, recorded in
``branches/pr-N/_branch/pins.json`` when the branch is first used, so reruns see the same
prod data however prod moves on. The lake reads them (``Lake.pins``); this module needs no
storage of its own, only the lake it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lakehouse import delta
from lakehouse.layers import Layer

if TYPE_CHECKING:
    from lakehouse.storage import Lake

PINS_FILE = "_branch/pins.json"
PROD_MANIFEST = "_branch/prod-manifest/manifest.json"
"""prod's dbt manifest as of the pin: the state slim dbt CI (state:modified+) compares with."""
DBT_STATE = "_dbt/manifest.json"
"""Where a prod marts build leaves the manifest of the code that built it."""


@dataclass(frozen=True)
class BranchPins:
    branch: str
    prod_root: str
    created_at: datetime
    pinned_at: datetime
    landing_as_of: datetime
    """Prod's landed files count for the branch only if modified strictly before this: the
    storage's own timestamp of pins.json (S3's clock and resolution, not the runner's)."""
    tables: dict[str, int] = field(default_factory=dict)
    """``layer/table`` -> the prod Delta version the branch reads."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "branch": self.branch,
                "prod_root": self.prod_root,
                "created_at": self.created_at.isoformat(),
                "pinned_at": self.pinned_at.isoformat(),
                "tables": dict(sorted(self.tables.items())),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, landing_as_of: datetime) -> BranchPins:
        data = json.loads(text)
        return cls(
            branch=data["branch"],
            prod_root=data["prod_root"],
            created_at=datetime.fromisoformat(data["created_at"]),
            pinned_at=datetime.fromisoformat(data["pinned_at"]),
            landing_as_of=landing_as_of,
            tables={k: int(v) for k, v in data["tables"].items()},
        )


def prod_tables(lake: Lake) -> dict[str, int]:
    """Every Delta table under prod's layer folders, with the version prod's readers see
    (the published one: a branch never pins a version that has not passed its checks)."""
    found: dict[str, int] = {}
    for layer in Layer:
        for table in lake.folder_names(lake.prod_uri(layer.value)):
            version = delta.readable_version(
                lake.prod_uri(layer.value, table), lake.storage_options
            )
            if version is not None:  # not a Delta table, or nothing published yet: not pinned
                found[f"{layer.value}/{table}"] = version
    return found


def snapshot(lake: Lake, created_at: datetime | None) -> BranchPins:
    now = datetime.now(UTC)
    manifest = lake.read_object(lake.prod_uri(DBT_STATE))
    if manifest is not None:
        lake.write_object(lake.uri(PROD_MANIFEST), manifest)
    return BranchPins(
        branch=lake.environment.branch or "",
        prod_root=lake.prod_root,
        created_at=created_at or now,
        pinned_at=now,
        landing_as_of=now,  # not stored: read back as pins.json's own write time
        tables=prod_tables(lake),
    )


def load_or_create_pins(lake: Lake) -> BranchPins:
    """The branch's pins; the first caller records them (an exclusive create: one wins)."""
    uri = lake.uri(PINS_FILE)
    if lake.read_object(uri) is None:
        # Losing the race is fine: the winner's pins are read below.
        lake.write_object(uri, snapshot(lake, None).to_json().encode(), exclusive=True)
    return read_pins(lake)


def read_pins(lake: Lake) -> BranchPins:
    uri = lake.uri(PINS_FILE)
    data = lake.read_object(uri)
    assert data is not None
    return BranchPins.from_json(data.decode(), lake.modified_at(uri))
