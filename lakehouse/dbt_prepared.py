"""``lakehouse-dbt``: dbt's own CLI, started with the project's parsed manifest.

Every marts build runs dbt in a new process with a new profile (its own scratch DuckDB
file), and dbt re-parses the whole project whenever the profile differs from the one it
last parsed with: seconds of every build, for a project that has not changed. This
entry point hands dbt the manifest ``dbt parse`` already saved (``make setup``, or the
definitions on first load) through dbt's programmatic API (``dbtRunner(manifest=...)``),
so dbt goes straight to the work; arguments, JSON logs, artifacts and exit codes are
dbt's own (Dagster streams them exactly as from ``dbt``). When any project file is newer
than that parse, the parse came from another dbt version, or the run passes ``--vars``,
dbt parses as usual. (The saved parse renders ``target`` as the default target; the
project's targets differ only in threads, which dbt reads at run time, not parse time.)
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

from lakehouse.settings import PROJECT_DIR

DBT_PROJECT_DIR = PROJECT_DIR / "dbt"
PARSED = DBT_PROJECT_DIR / "target" / "partial_parse.msgpack"
"""Where ``dbt parse`` (default target path) saves the full parsed project."""
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


def main(argv: list[str] | None = None) -> int:
    """Run dbt with ``argv``; exit 0 on success, 1 when a node failed, 2 on an error (as
    dbt's own CLI)."""
    from dbt.cli.main import dbtRunner

    args = list(sys.argv[1:] if argv is None else argv)
    # --vars change what parsing renders: such a run parses for itself.
    takes_saved = bool(args) and args[0] in WITH_MANIFEST and "--vars" not in args
    manifest = saved_manifest() if takes_saved else None
    result = dbtRunner(manifest=manifest).invoke(args)
    if result.success:
        return 0
    return 2 if result.exception is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
