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

import dagster as dg
import pytest

from lakehouse import delta
from lakehouse.instance import ensure_local_config
from lakehouse.landing import land_files
from lakehouse.sample_data import generate_sample
from lakehouse.settings import PROJECT_DIR, LakehouseSettings
from lakehouse.storage import Lake, Layer
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
def dagster_ui(tmp_path: Path) -> Iterator[tuple[str, Lake]]:
    """``dagster-webserver`` and ``dagster-daemon`` on loopback, on a temporary instance and lake."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    ensure_local_config(home)
    # Create the instance's storage here, once: the webserver's code server and the daemon
    # each create a new SQLite instance's schema, and starting both at once can leave it
    # with two migration heads (the code location then never loads).
    with dg.DagsterInstance.from_config(str(home)):
        pass
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LAKEHOUSE_LAKE_ROOT": str(tmp_path / "lake"),
        "LAKEHOUSE_PII_SECRET": "browser-test-secret",
        "LAKEHOUSE_WORK_DIR": str(tmp_path / "work"),
        # Sensors look every 5 s, not 30: landing -> raw -> cleansed -> marts is three
        # looks in a row, the longest wait of this test.
        "LAKEHOUSE_SENSOR_INTERVAL_SECONDS": "5",
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
        wait_for("the webserver", lambda: urllib.request.urlopen(f"{base}/server_info").read(), 300)
        wait_for(
            "the code location",
            lambda: graphql(base, "{ assetNodes { id } }")["assetNodes"],
            300,
        )
        yield (
            base,
            Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")),
        )
    finally:
        for proc in procs:
            stop(proc)


def latest_materialization(base: str, *path: str) -> str | None:
    data = graphql(
        base,
        "query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {"
        " ... on Asset { assetMaterializations(limit: 1) { runId } } } }",
        {"path": list(path)},
    )["assetOrError"]
    materializations = data.get("assetMaterializations") or []
    return materializations[0]["runId"] if materializations else None


def run_status(base: str, run_id: str) -> str:
    return str(
        graphql(
            base,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]
    )


def test_landed_files_become_fresh_marts_and_the_ui_shows_it(
    dagster_ui: tuple[str, Lake], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, lake = dagster_ui
    # The UI renders the lineage graph and asset pages in seconds, but on 2 busy cores
    # sometimes beyond expect()'s 5-second default.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)

        # The lineage graph, with the layers as groups.
        page.goto(f"{base}/asset-groups")
        dismiss_community_modal(page)
        for group in ("landing", "raw", "cleansed", "marts"):
            expect(page.get_by_text(group, exact=True).first).to_be_visible()

        # Sensors and schedules, on the automation page.
        page.goto(f"{base}/automation")
        for name in ("landing_orders_sensor", "daily_lakehouse_build", "nightly_table_maintenance"):
            expect(page.get_by_text(name).first).to_be_visible()

        # A table's Soda contract checks, on its asset page.
        page.goto(f"{base}/assets/cleansed/orders?view=checks")
        expect(page.get_by_text("customer_id__invalid__ref").first).to_be_visible()
        expect(page.get_by_text("order_id__duplicate").first).to_be_visible()

        # The audit trail is an asset with its own checks (complete, append-only).
        page.goto(f"{base}/assets/audit/trail?view=checks")
        expect(page.get_by_text("every_commit_recorded").first).to_be_visible()
        expect(page.get_by_text("append_only").first).to_be_visible()

        # Files land; with no other action, sensors ingest them, automation cleanses them
        # and rebuilds the marts.
        land_files(lake, generate_sample(tmp_path / "sample", days=3, scale=0.05, seed=1))
        mart_run = wait_for(
            "marts/orders to be materialized by the daemon",
            lambda: latest_materialization(base, "marts", "orders"),
            600,
            every=5,
        )
        assert delta.read(lake.table_uri(Layer.MARTS, "orders"), {}).height > 0
        assert wait_for(
            "the mart run", lambda: run_status(base, mart_run) in ("SUCCESS", "FAILURE"), 300
        )
        assert run_status(base, mart_run) == "SUCCESS"
        # The sensors asked for raw's partition of the day the files landed (today): the
        # UI counts that one day as materialized, out of every day since the first.
        stats = graphql(
            base,
            "query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {"
            " ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }",
            {"path": ["raw", "orders"]},
        )["assetNodeOrError"]["partitionStats"]
        assert stats["numMaterialized"] == 1 and stats["numPartitions"] > 300, stats

        page.goto(f"{base}/assets/marts/orders?view=events")
        page.screenshot(path=str(tmp_path / "marts-orders-events.png"))
        expect(page.get_by_text("delta_version").first).to_be_visible()
        expect(page.get_by_text("cleansed_versions").first).to_be_visible()
        page.goto(f"{base}/asset-groups")
        page.wait_for_timeout(3_000)  # let the graph lay out before the picture
        page.screenshot(path=str(tmp_path / "asset-graph.png"))

        # Materialize an asset from its page and watch the run succeed: the SLO report,
        # measured from the runs the daemon just made.
        page.goto(f"{base}/assets/observability/slos")
        dismiss_community_modal(page)
        page.locator("button", has_text="Materialize").first.click()
        page.get_by_text("Launched run").first.wait_for()
        runs = graphql(base, "{ runsOrError(limit: 1) { ... on Runs { results { runId } } } }")
        run_id = runs["runsOrError"]["results"][0]["runId"]
        wait_for(
            "the launched run to finish",
            lambda: run_status(base, run_id) in ("SUCCESS", "FAILURE", "CANCELED"),
            300,
            every=2,
        )
        assert run_status(base, run_id) == "SUCCESS"
        page.goto(f"{base}/runs/{run_id}")
        expect(page.get_by_text("Success").first).to_be_visible()
        # Each SLO's value and error budget, on the asset's latest materialization.
        page.goto(f"{base}/assets/observability/slos?view=events")
        expect(page.get_by_text("build_success_rate/budget_remaining").first).to_be_visible()

        # The whole build from its job's Launchpad, as an operator starts it by hand. Raw is
        # partitioned by landing day, so the UI asks before a run without a partition: such
        # a run ingests every new file, whatever its day, then cleanses and builds the marts.
        page.goto(f"{base}/locations/lakehouse/jobs/build_lakehouse/playground")
        page.get_by_role("button", name="Launch Run").first.click()
        expect(page.get_by_text("without a partition").first).to_be_visible()
        page.get_by_role("button", name="Confirm").click()
        build = wait_for(
            "the build_lakehouse run",
            lambda: [
                r
                for r in graphql(
                    base,
                    '{ runsOrError(filter: {pipelineName: "build_lakehouse"}) {'
                    " ... on Runs { results { runId tags { key } } } } }",
                )["runsOrError"]["results"]
            ],
            60,
        )[0]
        assert "dagster/partition" not in {t["key"] for t in build["tags"]}, build
        wait_for(
            "the Launchpad's run to finish",
            lambda: run_status(base, build["runId"]) in ("SUCCESS", "FAILURE", "CANCELED"),
            600,
            every=2,
        )
        assert run_status(base, build["runId"]) == "SUCCESS"
        assert latest_materialization(base, "marts", "orders") == build["runId"]
        browser.close()

    assert (tmp_path / "asset-graph.png").stat().st_size > 10_000
    if os.environ.get("LAKEHOUSE_UPDATE_SCREENSHOTS") == "1":  # refresh the README's picture
        shutil.copy(tmp_path / "asset-graph.png", SCREENSHOT)
