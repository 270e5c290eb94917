"""The ``lakehouse`` command's exit: it skips the interpreter's teardown once a command has
finished, and must still run every exit handler, flush its output and return the
command's own exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lakehouse.contracts import ExitCode
from lakehouse.settings import LakehouseSettings
from tests.lake_invariants import REPO, build_env


def lakehouse(
    settings: LakehouseSettings, *argv: str, before: str = ""
) -> subprocess.CompletedProcess[str]:
    """``lakehouse ARGV`` through the console script's entry point, in a process of its
    own with its output piped (block-buffered, as in CI), after running ``before``."""
    script = "\n".join(
        [
            "import sys",
            before,
            "from lakehouse.cli import run",
            f"sys.argv = ['lakehouse', *{list(argv)!r}]",
            "run()",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        env=build_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_exit_runs_every_exit_handler_and_flushes_the_output(
    local_settings: LakehouseSettings, tmp_path: Path
) -> None:
    marker = tmp_path / "exit-handler-ran"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = "\n".join(
        [
            "import atexit, pathlib, tempfile",
            f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')",
            # a library's cleanup at exit (weakref.finalize, as TemporaryDirectory's)
            f"KEPT = tempfile.TemporaryDirectory(dir={str(scratch)!r})",
        ]
    )
    done = lakehouse(local_settings, "summary", before=before)
    assert done.returncode == 0, done.stderr
    assert f"Lake: {local_settings.lake_root}" in done.stdout
    assert "cleansed/orders" in done.stdout  # the whole summary, not a buffer's worth
    assert marker.read_text() == "ran"
    assert list(scratch.iterdir()) == []  # the temporary directory was removed


def test_the_exit_code_is_the_commands(local_settings: LakehouseSettings) -> None:
    done = lakehouse(local_settings, "verify", "cleansed/nope")
    assert done.returncode == ExitCode.ERROR
    assert "no contract for 'cleansed/nope'" in done.stderr


def test_a_usage_error_exits_as_argparse_does(local_settings: LakehouseSettings) -> None:
    done = lakehouse(local_settings, "no-such-command")
    assert done.returncode == 2
    assert "invalid choice: 'no-such-command'" in done.stderr
