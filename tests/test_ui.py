"""The Dagster UI in a real browser: webserver and daemon on loopback, headless Chromium
(Debian's package) driven by Playwright. Skip locally with ``-m "not browser"``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lakehouse.settings import PROJECT_DIR
from tests.conftest import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = PROJECT_DIR / "docs" / "dagster-ui.png"


def graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read())["data"])


def wait_for(what: str, probe: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def dismiss_community_modal(page: Any) -> None:
    """Dagster 1.13 shows a one-time "Join the Dagster community" dialog even with telemetry
    off; a user would press Skip, and so does the test (it is remembered for the session)."""
    skip = page.get_by_role("button", name="Skip", exact=True)
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except Exception:
        return
    skip.click()
    skip.wait_for(state="hidden")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and everything it started, by its process group id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def dagster_ui(tmp_path: Path) -> Iterator[str]:
    """``dagster-webserver`` and ``dagster-daemon`` on loopback, on a temporary instance and lake."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LAKEHOUSE_LAKE_ROOT": str(tmp_path / "lake"),
        "LAKEHOUSE_WORK_DIR": str(tmp_path / "work"),
    }
    port = free_port()
    bin_dir = Path(sys.executable).parent
    workspace = ["-w", str(PROJECT_DIR / "workspace.yaml")]
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen(
            [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), *workspace],
            cwd=PROJECT_DIR, env=env, start_new_session=True,
            stdout=(logs / "webserver.log").open("wb"), stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [str(bin_dir / "dagster-daemon"), "run", *workspace],
            cwd=PROJECT_DIR, env=env, start_new_session=True,
            stdout=(logs / "daemon.log").open("wb"), stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the webserver", lambda: urllib.request.urlopen(f"{base}/server_info").read(), 120)
        wait_for(
            "the code location",
            lambda: graphql(base, "{ assetNodes { id } }")["assetNodes"],
            180,
        )
        yield base
    finally:
        for proc in procs:
            stop(proc)


def test_the_ui_shows_the_lakehouse_and_materializes_from_a_click(
    dagster_ui: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = dagster_ui
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)

        # The lineage graph, with the three layers as groups.
        page.goto(f"{base}/asset-groups")
        dismiss_community_modal(page)
        for group in ("raw", "cleansed", "marts"):
            expect(page.get_by_text(group, exact=True).first).to_be_visible()
        page.wait_for_timeout(2_000)  # let the graph lay out before the picture
        page.screenshot(path=str(tmp_path / "asset-graph.png"))

        # A table's Soda contract checks, on its asset page.
        page.goto(f"{base}/assets/cleansed/orders?view=checks")
        expect(page.get_by_text("customer_id__invalid__ref").first).to_be_visible()
        expect(page.get_by_text("order_id__duplicate").first).to_be_visible()

        # Materialize raw/stores from its page, then watch the run succeed in the UI.
        page.goto(f"{base}/assets/raw/stores")
        dismiss_community_modal(page)
        page.screenshot(path=str(tmp_path / "raw-stores.png"))
        page.locator("button", has_text="Materialize").first.click()
        runs = wait_for(
            "the launched run",
            lambda: graphql(base, "{ runsOrError { ... on Runs { results { runId status } } } }")[
                "runsOrError"
            ]["results"],
            60,
        )
        run_id = runs[0]["runId"]
        status = wait_for(
            "the run to finish",
            lambda: (
                s
                if (
                    s := graphql(
                        base,
                        "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                        {"id": run_id},
                    )["runOrError"]["status"]
                )
                in ("SUCCESS", "FAILURE", "CANCELED")
                else None
            ),
            240,
            every=2,
        )
        assert status == "SUCCESS"
        page.goto(f"{base}/runs/{run_id}")
        expect(page.get_by_text("Success").first).to_be_visible()
        browser.close()

    assert (tmp_path / "asset-graph.png").stat().st_size > 10_000
    if os.environ.get("LAKEHOUSE_UPDATE_SCREENSHOTS") == "1":  # refresh the README's picture
        shutil.copy(tmp_path / "asset-graph.png", SCREENSHOT)
