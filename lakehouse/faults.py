"""Fault injection: kill this process, for real, at a named commit boundary.

The reliability suite (``tests/test_faults.py``) proves that the lake converges after a
crash at every point where the pipeline has committed one thing and not yet the next. A
test starts a build with ``LAKEHOUSE_FAULT_POINT`` set (a field of ``LakehouseSettings``)
and the build SIGKILLs itself when it reaches that point: no ``finally`` block, no
atexit handler, no flushed buffer runs, exactly as when the OOM killer or a lost node
ends a run.

The value is ``<point>[:<table>][@<n>]``: kill the ``n``-th time (default the first)
``point`` is reached, for ``table`` only when given. Unset (the default), every
``fault_point`` call is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

POINTS: dict[str, str] = {
    "raw.before_commit": "landed files read, nothing committed yet",
    "raw.after_commit": "raw rows committed, the ingest log not yet written",
    "raw.after_log": "raw rows and the ingest log written",
    "cleansed.after_quarantine": "quarantine committed, the cleansed MERGE not yet",
    "cleansed.after_commit": "cleansed version committed, not yet audited",
    "write.staged": "a parallel append's files written, its commit not yet made",
    "check.before_publish": "a version passed its contract, the publish marker not yet written",
    "check.after_publish": "a version published",
    "check.before_reject": "a version failed its contract, not yet withdrawn",
    "marts.during_dbt": "dbt is running",
    "marts.after_export": "one mart written to Delta, the next not yet",
    "erase.after_delete": "an erasure deleted the subject's rows from one table, not the next",
}
"""Every injection point, and what has (and has not) been committed when it fires."""


@dataclass(frozen=True)
class FaultPlan:
    point: str
    table: str | None = None
    nth: int = 1

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        spec, _, nth = text.partition("@")
        point, _, table = spec.partition(":")
        if point not in POINTS:
            raise ValueError(
                f"unknown fault point {point!r}; known points: {', '.join(sorted(POINTS))}"
            )
        if nth and (not nth.isdigit() or int(nth) < 1):
            raise ValueError(f"fault point {text!r}: the count after @ must be a positive integer")
        return cls(point, table or None, int(nth) if nth else 1)


_plan: FaultPlan | None = None
_hits = 0


def arm(spec: str | None) -> None:
    """Arm (or, with None, disarm) the fault plan of this process."""
    global _plan, _hits
    plan = FaultPlan.parse(spec) if spec else None
    if plan != _plan:
        _plan, _hits = plan, 0


def fault_point(point: str, table: str | None = None) -> None:
    """Mark a commit boundary; SIGKILL this process if the armed plan names it."""
    global _hits
    if point not in POINTS:  # a typo here would make a fault test pass vacuously
        raise ValueError(f"unknown fault point {point!r}")
    plan = _plan
    if plan is None or plan.point != point or (plan.table and plan.table != table):
        return
    _hits += 1
    if _hits == plan.nth:
        os.kill(os.getpid(), signal.SIGKILL)
