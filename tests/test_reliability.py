"""The lake never lies: real SIGKILLs at every commit boundary, real concurrent builds.

Each case starts from the same saved lake (one delivery built, a second one landed, with
one order whose customer does not exist), restored to the very same place, so file URIs
and fingerprints match. An undisturbed ``lakehouse build`` of that lake gives the expected
image (``tests/lake_invariants.py``). Then:

- **faults**: a build killed with SIGKILL at one point (``lakehouse/faults.py``), then one
  normal build with no human action, must reach exactly the expected image, with nothing
  pending or rejected, no row lost or doubled, and marts equal to the independent
  reference computation (``tests/reference_marts.py``);
- **concurrency**: two or four builds at once (separate processes), then one normal
  build, must reach it too; every build either succeeds or fails cleanly.

``make test`` runs a representative subset; ``make reliability`` runs every point on a
local folder and on S3 (moto's server) and writes docs/reliability.md.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakehouse import contracts, faults
from lakehouse.landing import land_files
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, Layer
from tests.conftest import _s3_settings
from tests.lake_invariants import (
    Damage,
    Image,
    SavedLake,
    build,
    compare,
    finish,
    image,
    integrity_problems,
    start_build,
)
from tests.test_pipeline import assert_marts_match_reference, second_delivery

FIRST = datetime(2026, 11, 1, tzinfo=UTC)
SECOND = datetime(2026, 11, 2, tzinfo=UTC)
REPORT = os.environ.get("LAKEHOUSE_RELIABILITY_REPORT")
"""When set (``make reliability``), each case appends its outcome here as a JSON line."""

# (fault plan, whether `make test` runs it on the local lake); `make reliability` runs all.
FAULTS: list[tuple[str, bool]] = [
    ("raw.before_commit:orders", False),
    ("raw.after_commit:items", True),
    ("raw.after_log:orders", False),
    ("cleansed.after_quarantine:orders", False),
    ("cleansed.after_commit:orders", False),
    ("write.staged:cleansed/items", True),
    ("check.before_publish:orders", False),
    ("check.after_publish:customers", False),
    ("marts.during_dbt", False),
    ("marts.after_export@3", False),
]
REJECT_FAULT = "check.before_reject:orders"


# -- the saved lake, on each storage ------------------------------------------------
def second_delivery_with_a_bad_row(
    first: dict[str, Path], out: Path
) -> tuple[dict[str, Path], dict[str, Path]]:
    """The pipeline suite's second delivery plus one order of a customer that does not
    exist (a row-level rule quarantines it while the good rows publish), and the same
    delivery without it: what the reference computation of the marts should see."""
    clean = second_delivery(first, out / "clean")
    with clean["orders"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows.append({**rows[0], "id": "order-of-nobody", "customer": "no-such-customer"})
    orders = out / "with-bad-row" / "raw_orders.csv"
    orders.parent.mkdir(parents=True)
    with orders.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {**clean, "orders": orders}, clean


@dataclass
class Stage:
    saved: SavedLake
    expected: Image


STAGES = [
    pytest.param("local", id="local"),
    pytest.param("s3", id="s3", marks=[pytest.mark.s3, pytest.mark.reliability]),
]
"""The saved lake on each storage; `make test` runs the local subset, `make reliability`
all. Every test takes them in this order, so each is built once per worker."""


# Every test here belongs to the matrix `make reliability` reports, the fast cases too.
pytestmark = pytest.mark.fault_matrix


def fast_if(fast: bool, value: object) -> object:
    return pytest.param(value, marks=() if fast else pytest.mark.reliability, id=str(value))


@pytest.fixture(scope="module")
def stage(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sample_delivery: dict[str, Path],
) -> Iterator[Stage]:
    base = tmp_path_factory.mktemp(f"reliability-{request.param}")
    if request.param == "s3":
        settings = _s3_settings(request.getfixturevalue("s3_endpoint"), base / "work")
    else:
        settings = LakehouseSettings(lake_root=str(base / "lake"), work_dir=base / "work")
    # The sample's large tables appended on two threads, as a 10M-order lake's are: every
    # case here crosses that commit path too (``write.staged`` kills a build inside it).
    settings = settings.model_copy(update={"write_threads": 2, "parallel_write_rows": 20})
    lake = Lake(settings)
    second, second_as_published = second_delivery_with_a_bad_row(sample_delivery, base / "second")
    land_files(lake, sample_delivery, FIRST)
    first = build(settings)  # a process of its own, with these settings
    assert first.returncode == 0, first.output[-4000:]
    land_files(lake, second, SECOND)
    saved = SavedLake(settings, [sample_delivery, second_as_published])
    saved.save()
    undisturbed = build(settings)
    assert undisturbed.returncode == 0, undisturbed.output[-4000:]
    assert not integrity_problems(lake)
    expected = image(lake)
    assert expected["quarantine/orders"], (
        "the bad order must be quarantined for the fault cases to cover quarantine"
    )
    yield Stage(saved, expected)


def converged(stage: Stage) -> Damage:
    """Run one normal build and compare the lake with the undisturbed one."""
    lake = stage.saved.lake
    recovery = build(stage.saved.settings)
    damage = compare(image(lake), stage.expected)
    if recovery.returncode != 0:
        damage.problems.append(f"the recovery build failed:\n{recovery.output[-3000:]}")
    damage.problems += integrity_problems(lake)
    return damage


def record(kind: str, storage: str, case: str, survived: bool, damage: Damage) -> None:
    if not REPORT:
        return
    row = {
        "kind": kind,
        "storage": storage,
        "case": case,
        "survived": survived,
        "lost": damage.lost,
        "doubled": damage.doubled,
        "problems": damage.problems[:5],
    }
    with Path(REPORT).open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def storage_of(stage: Stage) -> str:
    return "s3" if stage.saved.lake.is_s3 else "local"


# -- faults ------------------------------------------------------------------------------
def test_every_commit_boundary_is_in_the_matrix() -> None:
    covered = {plan.partition(":")[0].partition("@")[0] for plan, _ in FAULTS}
    erasure = {"erase.after_delete"}  # killed mid-erasure in tests/test_erasure.py
    assert covered | {REJECT_FAULT.partition(":")[0]} | erasure == set(faults.POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES, indirect=True)
@pytest.mark.parametrize("plan", [fast_if(bool(fast), plan) for plan, fast in FAULTS])
def test_a_build_killed_at_a_commit_boundary_converges(stage: Stage, plan: str) -> None:
    stage.saved.restore()
    killed = build(stage.saved.settings, fault=plan)
    assert killed.killed, f"the fault {plan} never fired:\n{killed.output[-3000:]}"

    damage = converged(stage)
    record("fault", storage_of(stage), plan, damage.clean, damage)
    assert damage.clean, str(damage)
    assert_marts_match_reference(stage.saved.lake, stage.saved.deliveries)


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.parametrize("stage", STAGES, indirect=True)
def test_a_build_killed_before_withdrawing_a_failed_version_converges(
    stage: Stage, tmp_path: Path
) -> None:
    """The one point a good delivery never reaches: a version failed a table rule (here a
    contract that wants no rows) and the process dies before withdrawing it."""
    stage.saved.restore()
    strict = tmp_path / "soda_checks"
    shutil.copytree(contracts.CONTRACTS_DIR, strict)
    path = strict / "cleansed" / "orders.yml"
    path.write_text(path.read_text().replace("must_be_greater_than: 0", "must_be_less_than: 1", 1))
    prelude = f"from lakehouse import contracts; contracts.CONTRACTS_DIR = Path({str(strict)!r})"
    killed = finish(start_build(stage.saved.settings, REJECT_FAULT, prelude=prelude))
    assert killed.killed, killed.output[-3000:]
    lake = stage.saved.lake
    # Nobody may read the unverified version meanwhile: readers see the first delivery.
    assert "order-of-nobody" not in {r[0] for r in image(lake)["cleansed/orders"]}
    still_strict = finish(start_build(stage.saved.settings, prelude=prelude))
    assert still_strict.returncode != 0
    assert all("cleansed/orders" in p for p in integrity_problems(lake)), integrity_problems(lake)

    damage = converged(stage)  # the contract is fixed: the batch is judged again
    record("fault", storage_of(stage), REJECT_FAULT, damage.clean, damage)
    assert damage.clean, str(damage)


# -- concurrency -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES, indirect=True)
@pytest.mark.parametrize("builds", [fast_if(True, 2), fast_if(False, 4)])
def test_concurrent_builds_neither_lose_nor_double_a_row(
    stage: Stage, builds: int, tmp_path: Path
) -> None:
    stage.saved.restore()
    # The full matrix starts its builds on one new SQLite DAGSTER_HOME, as on a fresh
    # machine: creating its schema twice at once once corrupted it.
    home = tmp_path / "dagster-home" if builds > 2 else None
    extra_env = {"DAGSTER_HOME": str(home)} if home else None
    started = time.monotonic()
    procs = [start_build(stage.saved.settings, extra_env=extra_env) for _ in range(builds)]
    outcomes = [finish(p) for p in procs]
    elapsed = time.monotonic() - started
    if home is not None:
        runs = _runs_recorded(home)
        started_runs = sum("Nothing new" not in o.output for o in outcomes)
        assert len(runs) == started_runs >= 1, (runs, [o.output[-1500:] for o in outcomes])
        assert all(status in {"SUCCESS", "FAILURE"} for status in runs), runs
    lake = stage.saved.lake
    # Whatever the interleaving, what readers see right now is never wrong: either the
    # undisturbed result or, for tables a failed loser left behind, nothing doubled.
    interim = compare(image(lake), stage.expected)
    assert interim.doubled == 0, str(interim)
    assert any(o.returncode == 0 for o in outcomes), [o.output[-2000:] for o in outcomes]

    damage = converged(stage)
    record("concurrency", storage_of(stage), f"{builds} builds at once", damage.clean, damage)
    assert damage.clean, str(damage)
    assert elapsed < 600
    for outcome in outcomes:
        assert "Traceback" not in outcome.output.split("Lake:")[-1], outcome.output[-2000:]


def _runs_recorded(home: Path) -> list[str]:
    """The status of every run a DAGSTER_HOME recorded (opening it proves its schema)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [run.status.value for run in instance.get_runs()]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES, indirect=True)
def test_the_faults_touch_every_layer(stage: Stage) -> None:
    """A guard on the suite itself: the saved lake has something new for every layer, so
    no fault case passes because its point had nothing to do."""
    lake = stage.saved.lake
    stage.saved.restore()
    assert lake.published_table(Layer.CLEANSED, "orders") is not None
    assert {f.uri for f in lake.list_landing("orders")} - {
        r[0] for r in image(lake)["raw/orders"]
    }, "the second delivery is not new"


# -- a stalled store ---------------------------------------------------------------------
STALL_ENV = {
    "LAKEHOUSE_S3_CONNECT_TIMEOUT_SECONDS": "1",
    "LAKEHOUSE_S3_REQUEST_TIMEOUT_SECONDS": "2",
    "LAKEHOUSE_S3_RETRY_TIMEOUT_SECONDS": "4",
    "LAKEHOUSE_S3_MAX_RETRIES": "1",
}


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.parametrize("stage", STAGES, indirect=True)
@pytest.mark.parametrize("pause", [12.0])
def test_a_stalled_s3_delays_or_fails_a_build_but_never_lies(
    stage: Stage, request: pytest.FixtureRequest, pause: float
) -> None:
    """moto's server is SIGSTOPped mid-build for longer than every S3 timeout: requests
    time out, the steps retry with backoff (or fail, naming the cause), no check reports
    the stall as bad data, and the lake converges."""
    if not stage.saved.lake.is_s3:
        pytest.skip("a stalled endpoint is an S3 fault")
    server = request.getfixturevalue("s3_server")
    stage.saved.restore()
    started = time.monotonic()
    proc = start_build(stage.saved.settings, extra_env=STALL_ENV)
    time.sleep(8.0)  # past imports and into the first table writes
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(pause)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    stalled = finish(proc)
    elapsed = time.monotonic() - started
    output = stalled.output
    assert elapsed < 420, f"a {pause:.0f} s stall held the build for {elapsed:.0f} s"
    assert "Traceback" not in output.split("\nLake:")[-1]
    failed_checks = [
        line for line in output.splitlines() if "Asset check" in line and "failed" in line
    ]
    assert not failed_checks, failed_checks  # a stall is never bad data
    if stalled.returncode != 0:
        failures = [line for line in output.splitlines() if line.startswith("FAILED ")]
        assert failures and all(
            "timed out" in f.lower() or "timeout" in f.lower() or "connect" in f.lower()
            for f in failures
        ), failures
    damage = converged(stage)
    record("stall", "s3", f"S3 paused {pause:.0f} s mid-build", damage.clean, damage)
    assert damage.clean, str(damage)
