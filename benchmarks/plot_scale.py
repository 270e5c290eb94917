"""Plot what ``benchmarks/scale.py`` measured: wall time and peak memory of the full build
and of the bare polars + deltalake script against lake size, and the no-op and increment
builds.

Why: the table in ``docs/scale.md`` is exact, a picture shows the trend (a fixed cost at
small sizes, the slope at large ones). This reads that table, so the plot is always of
measured numbers, never of a run of its own.

    uv run --group bench python benchmarks/plot_scale.py docs/scale.md docs/scale.png
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path


def read_table(markdown: str) -> dict[str, dict[int, tuple[float, float]]]:
    """step -> orders -> (wall seconds, peak RSS in GB), from scale.py's table."""
    steps: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[1].replace(",", "").isdigit():
            continue
        _scale, orders, step, wall, _cpu, peak = cells
        steps[step][int(orders.replace(",", ""))] = (
            float(wall),
            float(peak.replace(",", "")) / 1024,
        )
    if "full build" not in steps or "bare script" not in steps:
        raise SystemExit("no scale.py table with full build and bare script rows found")
    return steps


def plot(steps: dict[str, dict[int, tuple[float, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    styles = {
        "full build": ("tab:blue", "o-"),
        "bare script": ("tab:gray", "s--"),
        "increment build": ("tab:orange", "^-"),
        "no-op build": ("tab:green", "v-"),
    }
    for step, (color, style) in styles.items():
        points = sorted(steps.get(step, {}).items())
        if not points:
            continue
        orders = [o / 1e6 for o, _ in points]
        time_ax.plot(orders, [w for _, (w, _m) in points], style, color=color, label=step)
        if step in ("full build", "bare script"):
            memory_ax.plot(orders, [m for _, (_w, m) in points], style, color=color, label=step)
    time_ax.set(xlabel="orders in the lake (millions)", ylabel="wall time (s)", title="Time")
    memory_ax.axhline(8, color="tab:red", linewidth=0.8, linestyle=":", label="8 GB goal")
    memory_ax.set(
        xlabel="orders in the lake (millions)",
        ylabel="peak RSS of the process tree (GB)",
        title="Memory",
    )
    for ax in (time_ax, memory_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.savefig(out, dpi=110)


def draw(markdown: str, out: Path) -> None:
    """The plot of one scale.py table, titled with when and where it was measured."""
    measured = next((line for line in markdown.splitlines() if line.startswith("Measured")), "")
    plot(read_table(markdown), out, measured.split(" with ")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, nargs="?", default=Path("docs/scale.md"))
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/scale.png"))
    args = parser.parse_args()
    draw(args.table.read_text(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
