"""What "the lake never lies" means, as code the fault and concurrency suites share.

A lake's *image* is what its readers see: every table at its published version, reduced to
the columns that say what was delivered (values as landed, which file and row they came
from, the cleansed values, the quarantine rule and status) and never to what a run stamps
(run ids, load times, commit versions). Two lakes built from the same landed files must
have equal images however many processes built them and wherever one was killed.
``compare`` counts what one image lost or doubled against another, row by row.

Builds run as separate processes through the real CLI (``lakehouse build``), so a fault is
a real SIGKILL and two builds are two operating-system processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from lakehouse import delta, quarantine
from lakehouse.catalog import mart_names
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import (
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    SOURCES,
    cleansed_value_columns,
)
from lakehouse.storage import GATED_LAYERS, Lake, Layer

MART_TABLES = mart_names()
"""Every mart of the dbt project (the table catalog's list)."""

REPO = Path(__file__).resolve().parents[1]


# -- builds as separate processes -----------------------------------------------------
def build_env(settings: LakehouseSettings, fault: str | None = None) -> dict[str, str]:
    """The environment of a ``lakehouse`` process on this lake (no DAGSTER_HOME: each
    process gets a throwaway instance unless the caller adds one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env.pop("DAGSTER_HOME", None)
    env.update(
        LAKEHOUSE_LAKE_ROOT=settings.lake_root,
        LAKEHOUSE_WORK_DIR=str(settings.work_dir),
        LAKEHOUSE_WRITE_THREADS=str(settings.write_threads),
        LAKEHOUSE_PARALLEL_WRITE_ROWS=str(settings.parallel_write_rows),
        PYTHONPATH=str(REPO),
    )
    if settings.s3_endpoint_url:
        env["LAKEHOUSE_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.aws_region:
        env["LAKEHOUSE_AWS_REGION"] = settings.aws_region
    if fault:
        env["LAKEHOUSE_FAULT_POINT"] = fault
    return env


def start_build(
    settings: LakehouseSettings,
    fault: str | None = None,
    extra_env: dict[str, str] | None = None,
    prelude: str = "",
) -> subprocess.Popen[str]:
    """``lakehouse build`` in a new process, through the command's own entry point and
    exit (``lakehouse.cli.run``); ``prelude`` is Python run first (a test's stand-in for
    a changed contract, say)."""
    env = {**build_env(settings, fault), **(extra_env or {})}
    code = (
        "import sys\nfrom pathlib import Path\n"
        f"{prelude}\n"
        "from lakehouse.cli import run\nsys.argv = ['lakehouse', 'build']\nrun()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@dataclass
class Finished:
    returncode: int
    output: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> Finished:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"build did not finish in {timeout} s:\n{output[-4000:]}") from None
    return Finished(proc.returncode, output)


def build(settings: LakehouseSettings, fault: str | None = None) -> Finished:
    return finish(start_build(settings, fault))


# -- a lake saved once, restored in place -----------------------------------------------
@dataclass
class SavedLake:
    """A lake saved once and restored in place before every case."""

    settings: LakehouseSettings
    deliveries: list[dict[str, Path]]
    """What the reference computation of the marts reads (the bad row left out)."""

    @property
    def lake(self) -> Lake:
        return Lake(self.settings)

    @property
    def saved_root(self) -> str:
        """Where the saved copy lives: beside the lake."""
        return self.settings.lake_root + ".saved"

    def save(self) -> None:
        self._copy(self.settings.lake_root, self.saved_root)

    def restore(self) -> None:
        self._copy(self.saved_root, self.settings.lake_root)
        shutil.rmtree(self.settings.work_dir, ignore_errors=True)

    def _copy(self, src: str, dst: str) -> None:
        if not src.startswith("s3://"):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
            return
        s3 = self.lake.s3
        bucket, _, src_key = src.removeprefix("s3://").partition("/")
        dst_key = dst.removeprefix(f"s3://{bucket}/")
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=dst_key + "/"
        ):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=src_key + "/"
        ):
            for obj in page.get("Contents", []):
                target = dst_key + obj["Key"][len(src_key) :]
                s3.copy_object(
                    Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": obj["Key"]}
                )


# -- images and damage ------------------------------------------------------------------
Image = dict[str, list[tuple[Any, ...]]]


def _columns(layer: Layer, table: str, available: list[str]) -> list[str]:
    if layer is Layer.RAW:
        source = SOURCES[table]
        wanted = [SOURCE_FILE_URI, SOURCE_FILE_FINGERPRINT, SOURCE_ROW_NUMBER]
        return wanted + list(source.landed_columns)
    if layer is Layer.CLEANSED:
        return [*cleansed_value_columns(SOURCES[table]), SOURCE_FILE_URI, SOURCE_ROW_NUMBER]
    if layer is Layer.QUARANTINE:
        return [*quarantine.ROW_KEY, quarantine.RULE, quarantine.STATUS]
    return sorted(c for c in available if not c.startswith("_"))  # a mart: its own columns


def tables() -> list[tuple[Layer, str]]:
    out = [(layer, s) for layer in (Layer.RAW, Layer.CLEANSED, Layer.QUARANTINE) for s in SOURCES]
    return out + [(Layer.MARTS, m) for m in MART_TABLES]


def image(lake: Lake) -> Image:
    """Every table as its readers see it, as rows (order does not matter, multiplicity does)."""
    out: Image = {}
    for layer, table in tables():
        dt = lake.published_table(layer, table)
        if dt is None:
            out[f"{layer}/{table}"] = []
            continue
        frame = pl.from_arrow(dt.to_pyarrow_table())
        assert isinstance(frame, pl.DataFrame)
        columns = _columns(layer, table, frame.columns)
        frame = frame.select(columns)
        # Floats and decimals compare by value; strings of them would not.
        out[f"{layer}/{table}"] = [tuple(_plain(v) for v in row) for row in frame.iter_rows()]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    return value


@dataclass
class Damage:
    lost: int = 0
    doubled: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems and self.lost == 0 and self.doubled == 0

    def __str__(self) -> str:
        head = f"{self.lost} row(s) lost, {self.doubled} row(s) doubled"
        return "\n".join([head, *self.problems[:20]])


def compare(got: Image, want: Image) -> Damage:
    """What ``got`` lost or doubled against ``want``, table by table and row by row."""
    damage = Damage()
    for name in sorted(set(got) | set(want)):
        have, expected = Counter(got.get(name, [])), Counter(want.get(name, []))
        lost = sum((expected - have).values())
        extra = sum((have - expected).values())
        doubled = sum(n - 1 for n in have.values() if n > 1)
        damage.lost += lost
        damage.doubled += max(doubled, 0)
        if lost or extra:
            sample = next(iter((expected - have) or (have - expected)))
            damage.problems.append(
                f"{name}: {lost} row(s) missing, {extra} unexpected ({doubled} duplicated); "
                f"e.g. {sample!r}"[:600]
            )
    return damage


def integrity_problems(lake: Lake) -> list[str]:
    """What must hold of any lake at rest, whatever built it: nothing pending or rejected
    (a normal build audits every version), no duplicate keys in cleansed, every raw row
    loaded once."""
    problems: list[str] = []
    for layer, table in tables():
        dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
        if dt is None:
            continue
        state = delta.table_state(dt)
        if layer in GATED_LAYERS and (state.pending or state.readable != state.latest):
            problems.append(f"{layer}/{table}: {state.describe()} (latest v{state.latest})")
        if layer in GATED_LAYERS and state.rejected is not None:
            problems.append(f"{layer}/{table}: {state.describe()}")
        if layer is Layer.RAW:
            key = [SOURCE_FILE_URI, SOURCE_FILE_FINGERPRINT, SOURCE_ROW_NUMBER]
            frame = delta.read(
                lake.table_uri(layer, table), lake.storage_options, state.readable, key
            )
            if frame.height != frame.unique().height:
                problems.append(
                    f"raw/{table}: {frame.height - frame.unique().height} row(s) loaded twice"
                )
        if layer is Layer.CLEANSED:
            key = list(SOURCES[table].key)
            frame = delta.read(
                lake.table_uri(layer, table), lake.storage_options, state.readable, key
            )
            if frame.height != frame.unique().height:
                problems.append(
                    f"cleansed/{table}: {frame.height - frame.unique().height} duplicate key(s)"
                )
    return problems


# -- the printed table (make reliability) ------------------------------------------------
def render_report(lines: list[str], command: str) -> str:
    """docs/reliability.md from the JSON lines the suite appended, one per case."""
    import json

    rows = sorted(
        (json.loads(line) for line in lines if line.strip()),
        key=lambda r: (r["kind"], r["case"], r["storage"]),
    )
    out = [
        "# Reliability: faults injected, and what the lake lost or doubled",
        "",
        "Every row is one real fault: a build process SIGKILLed at a commit boundary "
        "(`lakehouse/faults.py`), or several `lakehouse build` processes started at once. "
        "Each starts from the same lake (one delivery built, a second landed with one "
        "order of an unknown customer) and ends with one normal build; *survived* means the "
        "lake then equals an undisturbed build's, row by row (raw, cleansed, quarantine, "
        "marts), with nothing pending or rejected, and the marts equal the independent "
        "reference computation (`tests/test_reliability.py`).",
        "",
        f"Regenerate with `{command}`.",
        "",
        "| kind | case | storage | faults injected | survived | rows lost | rows doubled |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['kind']} | `{r['case']}` | {r['storage']} | 1 | "
            f"{'yes' if r['survived'] else 'NO'} | {r['lost']} | {r['doubled']} |"
        )
    total = len(rows)
    survived = sum(r["survived"] for r in rows)
    out += [
        f"| **all** | | | **{total}** | **{survived}** | **{sum(r['lost'] for r in rows)}** "
        f"| **{sum(r['doubled'] for r in rows)}** |",
        "",
    ]
    for r in rows:
        for problem in r.get("problems", []):
            out.append(f"- {r['kind']} `{r['case']}` on {r['storage']}: {problem}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    target.write_text(render_report(source.read_text().splitlines(), "make reliability"))
    print(target.read_text())
