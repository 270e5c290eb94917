"""The CI/CD workflows: valid against GitHub's schema, clean under zizmor's audit, and
calling only commands this project has. Both tools run offline, from the dev dependencies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lakehouse.settings import PROJECT_DIR

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def test_the_workflows_exist() -> None:
    names = {w.name for w in WORKFLOWS}
    assert {
        "pr.yml",
        "branch-deployment.yml",
        "deploy-prod.yml",
        "self-hosted-branch.yml",
    } <= names


def test_workflows_match_githubs_schema() -> None:
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_medium_or_high() -> None:
    result = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--format", "json", str(PROJECT_DIR / ".github")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},  # no GH_TOKEN: nothing online
    )
    findings = json.loads(result.stdout or "[]")
    serious = [
        f"{f['ident']} ({f['determinations']['severity']}): {f['desc']}"
        for f in findings
        if f["determinations"]["severity"].lower() in ("medium", "high")
    ]
    assert not serious, "\n".join(serious)
    assert result.returncode in (0, *range(10, 15)), result.stderr  # 1x: findings of level x


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_lakehouse_command_a_workflow_runs_exists(workflow: Path) -> None:
    from lakehouse.cli import main

    commands = re.findall(r"\blakehouse ((?:branch )?[a-z][a-z-]*)", workflow.read_text())
    for command in set(commands):
        with pytest.raises(SystemExit) as exit_:
            main([*command.split(), "--help"])
        assert exit_.value.code == 0, command


def test_dagster_cloud_yaml_names_the_code_location() -> None:
    config = yaml.safe_load((PROJECT_DIR / "dagster_cloud.yaml").read_text())
    (location,) = config["locations"]
    source = location["code_source"]
    # `dagster-cloud ci check` refuses module_name together with attribute: `defs` is found.
    assert source == {"module_name": "lakehouse.definitions"}
    from lakehouse import definitions

    assert isinstance(definitions.defs, type(definitions.build_definitions()))


def test_the_build_time_dbt_preparation_the_workflows_run_works(tmp_path: Path) -> None:
    """`dagster-dbt project prepare-and-package` on our DbtProject, as the deploy jobs do.

    On a copy of the project: it rewrites dbt/target, which tests running beside this one
    read."""
    import os
    import shutil

    ignore = shutil.ignore_patterns("target", "logs", "__pycache__", "dbt_packages")
    for part in ("lakehouse", "dbt", "soda_checks"):  # the definitions load every contract
        shutil.copytree(PROJECT_DIR / part, tmp_path / part, ignore=ignore)
    shutil.copy(PROJECT_DIR / "pyproject.toml", tmp_path)
    result = subprocess.run(
        [
            str(BIN / "dagster-dbt"),
            "project",
            "prepare-and-package",
            "--file",
            str(tmp_path / "lakehouse" / "defs" / "marts.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # as `uv run` does
            "PYTHONPATH": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Project preparation complete" in result.stdout
    assert (tmp_path / "dbt" / "target" / "manifest.json").exists()
