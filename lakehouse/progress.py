"""What a build started from the CLI shows while it runs: one line per finished step, with
what it did (files and rows), and every warning or error as it happens.

A Dagster logger (``progress_logger``) reads the run's own events, so the lines come from
the same source as the UI's. On a terminal the step being run is shown on a line that is
overwritten; in a CI log (not a terminal) nothing is printed but the finished steps.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import dagster as dg

FACTS = {
    "new_files_loaded": "files",
    "rows_added": "rows added",
    "files_rejected": "files rejected",
    "rows_written": "rows written",
    "rows_quarantined": "rows quarantined",
    "dagster/row_count": "rows in the table",
}
"""Materialization metadata worth a word on the step's line, and how it is said."""

STREAM: IO[str] | None = None
"""Where the lines go (the CLI sets its own stdout); None: this process's stdout."""


class StepProgress(logging.Handler):
    """Turns a run's log records into progress lines."""

    def __init__(self, stream: IO[str], live: bool) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.live = live
        self.started: dict[str, float] = {}
        self.facts: dict[str, list[str]] = {}
        self.finished = 0
        self._status_shown = False

    def _write(self, line: str) -> None:
        if self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def _status(self, text: str) -> None:
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._status_shown = True

    def emit(self, record: logging.LogRecord) -> None:
        meta: dict[str, Any] | None = getattr(record, "dagster_meta", None)
        if meta is None:
            return
        step = meta.get("step_key") or "run"
        event = meta.get("dagster_event")
        if event is None:  # the steps' own log lines: warnings and errors only
            if record.levelno >= logging.WARNING:
                self._write(f"  ! {step}: {meta.get('orig_message', record.getMessage())}")
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = time.monotonic()
            if self.live:
                self._status(f"running {step} ...")
        elif kind == "ASSET_MATERIALIZATION":
            metadata = event.event_specific_data.materialization.metadata
            said = [
                f"{metadata[key].value:,} {words}"
                for key, words in FACTS.items()
                if key in metadata
                and isinstance(metadata[key].value, int)
                and (metadata[key].value or key in ("rows_added", "rows_written"))
            ]
            asset = event.asset_key.to_user_string() if event.asset_key else step
            if said and asset.replace("/", "__") != step:  # a step of several assets
                said = [f"{asset} {', '.join(said)}"]
            self.facts.setdefault(step, []).extend(said)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            self.finished += 1
            seconds = time.monotonic() - self.started.pop(step, time.monotonic())
            mark = "done" if kind == "STEP_SUCCESS" else "FAILED"
            facts = "; ".join(self.facts.pop(step, []))
            self._write(
                f"[{self.finished:>3}] {mark:<6} {step} ({seconds:.1f} s)"
                + (f": {facts}" if facts else "")
            )


@dg.logger(None, description="One line per finished step, with files and rows (the CLI output).")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger(f"lakehouse.progress.{init_context.run_id}")
    logger.setLevel(logging.DEBUG)  # step events are logged at DEBUG
    logger.propagate = False
    stream = STREAM or sys.stdout
    logger.handlers = [StepProgress(stream, live=stream.isatty())]
    return logger
