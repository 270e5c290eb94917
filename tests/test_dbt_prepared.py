"""dbt runs in the build's process with the saved parse, and only while that parse still
describes the project: a model edited after it, or a damaged file, and dbt parses as
usual."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from lakehouse import dbt_prepared
from lakehouse.dbt_prepared import (
    DBT_PROJECT_DIR,
    MANIFEST,
    PARSED,
    ensure_parsed,
    saved_manifest,
)
from lakehouse.marts import dbt_code_fingerprint, mart_models


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


def test_a_model_edited_after_the_parse_is_parsed_again_before_anything_reads_it(
    tmp_path: Path,
) -> None:
    """The asset graph, the build plan and each mart's recorded dbt code read the manifest:
    a stale one would have ``lakehouse build`` call the marts up to date with SQL that
    is no longer on disk. An edit makes the next reader parse; no edit, no parse."""
    project, _ = _project_copy(tmp_path)
    manifest = project / "target" / MANIFEST.name
    shutil.copy2(MANIFEST, manifest)
    os.utime(manifest, (PARSED.stat().st_mtime, PARSED.stat().st_mtime))
    before = manifest.stat().st_mtime_ns
    code = dbt_code_fingerprint(manifest)
    assert not ensure_parsed(project), "an unchanged project must not be parsed"
    assert manifest.stat().st_mtime_ns == before

    model = project / "models" / "marts" / "locations.sql"
    model.write_text(model.read_text().replace("opened_at", "opened_at,\n    1 as edited"))
    assert ensure_parsed(project), "an edited model must be parsed again"
    assert dbt_code_fingerprint(manifest) != code, "the marts' recorded dbt code must move"
    compiled = json.loads(manifest.read_text())["nodes"]["model.jaffle_lakehouse.locations"]
    assert "1 as edited" in compiled["raw_code"]
    assert not ensure_parsed(project), "a parse that is current is not repeated"

    assert saved_manifest(project / "target" / PARSED.name, project) is not None, (
        "after the parse, dbt in the process starts from it again"
    )

    model.touch()  # a file saved unchanged: dbt keeps its parse, which is current again
    assert ensure_parsed(project)
    assert not ensure_parsed(project)
    assert saved_manifest(project / "target" / PARSED.name, project) is not None

    manifest.unlink()
    assert ensure_parsed(project), "a project never parsed (a fresh clone) is parsed"
    assert dbt_code_fingerprint(manifest) != code


def test_dbt_in_process_skips_the_parse_a_new_profile_would_force(tmp_path: Path) -> None:
    """A profile dbt has not parsed with (every run's own DuckDB file) makes the dbt CLI
    parse the project again; dbt run in this process lists the same models without
    parsing, and its events are the JSON lines the CLI prints."""
    profiles = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    for output in profiles["jaffle_lakehouse"]["outputs"].values():
        output["path"] = str(tmp_path / "lakehouse.duckdb")
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    shutil.copytree(PARSED.parent, tmp_path / "plain", ignore=shutil.ignore_patterns("*.json"))
    shutil.copytree(PARSED.parent, tmp_path / "prepared", ignore=shutil.ignore_patterns("*.json"))

    def command(target: str) -> list[str]:
        return [
            "ls",
            *("--resource-type", "model", "--output", "name"),
            *("--profiles-dir", str(tmp_path), "--project-dir", str(DBT_PROJECT_DIR)),
            *("--target-path", str(tmp_path / target)),
        ]

    plain = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "--log-format", "json", *command("plain")],
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True,
        check=True,
    )
    finished = dbt_prepared.run(command("prepared"))
    assert finished.returncode == 0

    def listed(stdout: bytes) -> tuple[list[str], list[str]]:
        events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        listing = {"ListCmdOut", "PrintEvent"}
        names = [e["info"]["msg"] for e in events if e["info"]["name"] in listing]
        return sorted(names), [e["info"]["msg"] for e in events]

    plain_names, plain_messages = listed(plain.stdout)
    names, messages = listed(finished.stdout.getvalue())
    assert plain_names == names == mart_models()
    assert any("profile has changed" in m for m in plain_messages)
    assert not any("profile has changed" in m for m in messages)
    assert all(e for e in messages), "every kept event carries its message, as the CLI's lines"


INTERRUPTED = """
import faulthandler, os, signal, sys, threading, time
from dbt.cli.main import dbtRunner  # imported first: the signal comes while dbt runs
from lakehouse import dbt_prepared
faulthandler.dump_traceback_later(90)  # a hang says where
threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
started = time.monotonic()
try:
    dbt_prepared.run(sys.argv[1:])
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f} s")
else:
    print("dbt ran to the end")
"""


def test_an_interrupt_stops_dbt_running_in_the_process(tmp_path: Path) -> None:
    """Ctrl-C (or Dagster terminating a run) during a long dbt query stops the build: dbt
    in-process must not swallow it. A process of its own receives the signal."""
    profiles = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    for output in profiles["jaffle_lakehouse"]["outputs"].values():
        output["path"] = str(tmp_path / "lakehouse.duckdb")
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    endless = "select count(*) from range(1000000000000)"  # hours of DuckDB work
    command = ["show", "--inline", endless, "--profiles-dir", str(tmp_path)]
    command += ["--project-dir", str(DBT_PROJECT_DIR), "--target-path", str(tmp_path / "t")]
    started = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, *command],
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = started.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        started.kill()
        out, err = started.communicate()
    assert "interrupted after" in out, out + err[-4000:]
    assert started.returncode == 0, "the process exits once interrupted: " + err[-4000:]
