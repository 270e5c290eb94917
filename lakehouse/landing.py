"""Delivering files into landing/<source>/ under the date-prefixed key convention.

Convention: ``landing/<source>/<YYYY-MM-DD>/<HHMMSSffffff>-<original file name>`` (UTC).
Keys therefore sort in arrival order, which lets a sensor list only what is new with
S3's ``StartAfter``. Ingestion accepts any key under landing/<source>/; only listing
efficiency depends on the convention.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from lakehouse.storage import Lake, LandedFile


def landing_key(file_name: str, when: datetime) -> str:
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%d}/{when:%H%M%S%f}-{file_name}"


def land_files(
    lake: Lake, files: Mapping[str, Path], when: datetime | None = None
) -> dict[str, str]:
    """Copy local files into landing; ``files`` maps source name to file. Returns landed URIs."""
    when = when or datetime.now(UTC)
    return {
        source: lake.put_landing_file(source, landing_key(path.name, when), path)
        for source, path in files.items()
    }


DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


def landing_day(f: LandedFile) -> date:
    """The day a landed file belongs to: the day its key starts with (the convention's
    ``YYYY-MM-DD/`` folder), else the UTC day it was last modified. Raw's daily partitions
    are these days: a partition's run ingests that day's files."""
    folder = f.relative_key.split("/", 1)[0] if "/" in f.relative_key else ""
    if DAY_FOLDER.fullmatch(folder):
        try:
            return date.fromisoformat(folder)
        except ValueError:  # e.g. 2026-02-30
            pass
    return f.last_modified.astimezone(UTC).date()


# -- finding new files: the sensors' cursor ----------------------------------------------
LOOKBACK = timedelta(hours=1)
"""Files whose key time is this much older than the newest seen are still listed, so a
file landing a little late (or with a slow clock) under an older key is not missed."""


def key_time(relative_key: str) -> datetime | None:
    """The UTC time a convention key encodes (``YYYY-MM-DD/HHMMSSffffff-name``), else None."""
    day, _, rest = relative_key.partition("/")
    try:
        return datetime.strptime(f"{day} {rest[:12]}", "%Y-%m-%d %H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class LandingCursor:
    """Where listing resumes (``start_after``) and what was seen since (key -> fingerprint).

    Keys, not timestamps: files with the same LastModified second, deleted or archived
    files and huge bursts are all handled, and each listing starts near the newest file.
    """

    start_after: str | None = None
    seen: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"start_after": self.start_after, "seen": self.seen}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("start_after"), dict(data.get("seen") or {}))


def new_landed_files(
    lake: Lake, source: str, cursor: LandingCursor
) -> tuple[list[LandedFile], LandingCursor]:
    """Files under landing/<source>/ not seen before (or re-sent with new content), and the
    cursor to use next. Nothing is marked seen until the caller commits the new cursor."""
    listed = lake.list_landing(source, start_after=cursor.start_after)
    new = [f for f in listed if cursor.seen.get(f.relative_key) != f.fingerprint]
    seen = {**cursor.seen, **{f.relative_key: f.fingerprint for f in listed}}
    times = [t for t in map(key_time, seen) if t is not None]
    start_after = cursor.start_after
    if times:
        bound = landing_key("", max(times) - LOOKBACK).removesuffix("-")
        start_after = max(start_after or "", bound)
        seen = {k: v for k, v in seen.items() if k > start_after}
    return new, LandingCursor(start_after, seen)
