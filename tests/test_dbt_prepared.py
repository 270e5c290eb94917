"""``lakehouse-dbt`` hands dbt the saved parse, and only while it still describes the
project: a model edited after it, or a damaged file, and dbt parses as usual."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from lakehouse.dbt_prepared import DBT_PROJECT_DIR, PARSED, saved_manifest
from lakehouse.marts import mart_models


def _project_copy(tmp_path: Path) -> tuple[Path, Path]:
    project = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    parsed = project / "target" / PARSED.name
    parsed.parent.mkdir()
    shutil.copy2(PARSED, parsed)
    # The copy's files are as old as the parse: the parse describes them.
    stamp = PARSED.stat().st_mtime - 60
    for path in project.rglob("*"):
        if path != parsed:
            os.utime(path, (stamp, stamp))
    return project, parsed


def test_the_saved_parse_stands_in_only_while_the_project_is_unchanged(tmp_path: Path) -> None:
    project, parsed = _project_copy(tmp_path)
    manifest = saved_manifest(parsed, project)
    assert manifest is not None
    models = sorted(n.name for n in manifest.nodes.values() if n.resource_type == "model")
    assert models == mart_models()

    model = project / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text() + "\n-- edited after the parse\n")
    assert saved_manifest(parsed, project) is None, "an edited model must be parsed again"

    project, parsed = _project_copy(tmp_path / "again")
    parsed.write_bytes(b"not a manifest")
    os.utime(parsed, (PARSED.stat().st_mtime, PARSED.stat().st_mtime))
    assert saved_manifest(parsed, project) is None


def test_lakehouse_dbt_skips_the_parse_a_new_profile_would_force(tmp_path: Path) -> None:
    """A profile dbt has not parsed with (every run's own DuckDB file) makes plain dbt
    parse the project again; ``lakehouse-dbt`` lists the same models without parsing."""
    profiles = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    for output in profiles["jaffle_lakehouse"]["outputs"].values():
        output["path"] = str(tmp_path / "lakehouse.duckdb")
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    env = {
        **os.environ,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_PROFILES_DIR": str(tmp_path),
    }

    def listed(executable: str, target: str) -> tuple[list[str], str]:
        command = [str(Path(sys.executable).with_name(executable)), "ls"]
        command += ["--resource-type", "model", "--output", "name", "--log-format", "text"]
        command += ["--target-path", str(tmp_path / target), "--project-dir", str(DBT_PROJECT_DIR)]
        result = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        names = [line.split()[-1] for line in result.stdout.splitlines() if line.strip()]
        return sorted(n for n in names if n in mart_models()), result.stdout

    shutil.copytree(PARSED.parent, tmp_path / "plain", ignore=shutil.ignore_patterns("*.json"))
    shutil.copytree(PARSED.parent, tmp_path / "prepared", ignore=shutil.ignore_patterns("*.json"))
    plain, plain_log = listed("dbt", "plain")
    prepared, prepared_log = listed("lakehouse-dbt", "prepared")
    assert plain == prepared == mart_models()
    assert "profile has changed" in plain_log
    assert "profile has changed" not in prepared_log
