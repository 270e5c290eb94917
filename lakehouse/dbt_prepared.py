"""dbt in this process, started with the project's saved parse.

A marts build used to start dbt as a subprocess: seconds of imports on every build,
then a full parse of the project, because every run's profile points at its own scratch
DuckDB file and dbt re-parses whenever the profile differs from the one it last parsed
with. Here dbt runs through its programmatic API (``dbtRunner``) in the build's own
process: the imports are paid once per process, and dbt is handed the manifest
``dbt parse`` already saved (``make setup``, or the definitions on first load), so it
goes straight to the work. Its structured events are the JSON log lines the dbt CLI
would have printed, so dagster-dbt turns them into Dagster events exactly as from a
subprocess. When any project file is newer than that parse, the parse came from another
dbt version, or the run passes ``--vars``, dbt parses as usual. (The saved parse renders
``target`` as the default target; the project's targets differ only in threads, which
dbt reads at run time, not parse time.)
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.settings import PROJECT_DIR

DBT_PROJECT_DIR = PROJECT_DIR / "dbt"
PARSED = DBT_PROJECT_DIR / "target" / "partial_parse.msgpack"
"""Where ``dbt parse`` (default target path) saves the full parsed project."""
MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"
"""The parsed project (``dbt parse``): the models, their SQL checksums and refs, which the
asset graph, the build plan and each mart's recorded inputs are made from."""
PROJECT_FILES = ("dbt_project.yml", "packages.yml", "dependencies.yml", "selectors.yml")
PROJECT_FOLDERS = ("models", "macros", "seeds", "snapshots", "tests", "analyses")
WITH_MANIFEST = frozenset({"build", "run", "test", "compile", "ls", "list", "show", "seed"})
"""dbt commands that take a parsed project as it is (``parse`` itself, ``deps`` and the
others get none)."""


def project_changed_since(parsed_at: float, project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """Whether any file dbt parses is newer than the saved parse."""
    files = [project_dir / name for name in PROJECT_FILES]
    for folder in PROJECT_FOLDERS:
        files.extend(p for p in (project_dir / folder).rglob("*") if p.is_file())
    return any(f.exists() and f.stat().st_mtime > parsed_at for f in files)


def dbt_executable() -> str:
    """The dbt installed beside this interpreter (the venv's), which PATH may not include."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def parse(project_dir: Path = DBT_PROJECT_DIR) -> None:
    """``dbt parse``: the project's manifest and saved parse, written afresh."""
    subprocess.run(
        [
            dbt_executable(),
            "parse",
            "--quiet",
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
        ],
        check=True,
    )


def parse_is_current(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """Whether the project has a manifest, and no file dbt parses is newer than it or the
    saved parse: the manifest describes the code as it is."""
    target = project_dir / "target"
    manifest, parsed = target / MANIFEST.name, target / PARSED.name
    saved = [p.stat().st_mtime for p in (manifest, parsed) if p.exists()]
    return manifest.exists() and not project_changed_since(min(saved), project_dir)


def ensure_parsed(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """Parse the project when it has no manifest or a file dbt parses is newer than the
    manifest or the saved parse, and say whether it did.

    Everything that decides what to build reads the manifest: a model edited after the
    last parse would otherwise keep its old checksum, so a build would see "dbt code
    unchanged" and leave the marts built from the old SQL standing. Cheap when nothing
    changed (file times only); one process parses at a time, and one that waited for
    another's parse uses it."""
    target = project_dir / "target"
    parsed = target / PARSED.name
    if parse_is_current(project_dir):
        return False
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if parse_is_current(project_dir):
            return False
        parse(project_dir)
        if parsed.exists():
            # dbt leaves its saved parse as it was when it finds every file's contents
            # unchanged (a file only touched, or edited and reverted): it has just checked
            # that the parse describes the project, so date it, or every build would parse.
            parsed.touch()
    return True


def saved_manifest(path: Path = PARSED, project_dir: Path = DBT_PROJECT_DIR) -> Any | None:
    """The saved parse as dbt's in-memory manifest, or None when it cannot stand in for a
    fresh parse (missing, older than the project files, or another dbt version's)."""
    if not path.exists() or project_changed_since(path.stat().st_mtime, project_dir):
        return None
    from dbt.contracts.graph.manifest import Manifest
    from dbt.parser.manifest import extended_mashumuro_decoder

    try:
        manifest = Manifest.from_msgpack(path.read_bytes(), decoder=extended_mashumuro_decoder)
    except Exception:  # an unreadable or foreign file: dbt parses instead
        return None
    if manifest.metadata.dbt_version != importlib.metadata.version("dbt-core"):
        return None
    return manifest


@dataclass
class FinishedDbt:
    """A dbt invocation that ran in this process, shaped as the finished ``subprocess.Popen``
    dagster-dbt reads: the command line, its JSON log lines on ``stdout``, its exit code
    (0 success, 1 a node failed, 2 dbt itself failed, as dbt's own CLI)."""

    args: list[str]
    stdout: io.BytesIO
    returncode: int

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def poll(self) -> int:
        return self.returncode

    def send_signal(self, signal: int) -> None:
        """Nothing to interrupt: the invocation has already finished."""


def run(args: Sequence[str]) -> FinishedDbt:
    """Run dbt with ``args`` (a command and its options) in this process and keep what the
    CLI would have printed at its default log level (info and above) as JSON lines.

    dbt's own loggers are silenced: its events reach the caller through the lines, once.
    """
    from dbt.cli.main import dbtRunner
    from dbt_common.events.base_types import EventMsg
    from dbt_common.events.functions import msg_to_dict

    lines: list[bytes] = []

    def keep(msg: EventMsg) -> None:
        if msg.info.level != "debug":
            lines.append(json.dumps(msg_to_dict(msg), default=str).encode() + b"\n")

    command = list(args)
    # --vars change what parsing renders: such a run parses for itself.
    takes_saved = bool(command) and command[0] in WITH_MANIFEST and "--vars" not in command
    manifest = saved_manifest() if takes_saved else None
    quiet = ["--log-level", "none", "--log-level-file", "none"]
    try:
        result = dbtRunner(manifest=manifest, callbacks=[keep]).invoke(quiet + command)
    except BaseException:
        _release_duckdb(interrupt=True)
        raise
    # dbtRunner turns some interrupts into a result; an interrupt (Ctrl-C, Dagster
    # terminating the run) must still stop the build, and the query it cut short.
    interrupted = result.exception is not None and not isinstance(result.exception, Exception)
    _release_duckdb(interrupt=interrupted)
    if interrupted:
        raise result.exception  # type: ignore[misc]
    code = 0 if result.success else 2 if result.exception is not None else 1
    return FinishedDbt(["dbt", *command], io.BytesIO(b"".join(lines)), code)


def _release_duckdb(*, interrupt: bool) -> None:
    """Close the database dbt-duckdb keeps open in the process (a class attribute) after
    dbt returns, as the end of a dbt process would: the build reads the file next, and
    DuckDB refuses a second connection to a file open with another configuration. After
    an interrupt, a query dbt's threads still run is interrupted first (closing would
    wait for it)."""
    connections = sys.modules.get("dbt.adapters.duckdb.connections")
    if connections is None:
        return  # dbt stopped before it loaded the adapter: nothing is open
    manager = connections.DuckDBConnectionManager
    environment = manager._ENV
    if environment is not None:
        database = getattr(environment, "conn", None)
        if interrupt and database is not None:
            database.interrupt()
        environment.close()
    manager.close_all_connections()
