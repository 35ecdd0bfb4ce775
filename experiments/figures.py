"""The figures a reader of a sweep looks at first, drawn from its records alone.

`write_figures` (one results folder, beside ``table1.md``):

- ``val_miou.{png,svg}``: each method's val mIoU, every run a dot, the seed mean a bar
  with its 95 % t interval over seeds (a method with one run gets no interval);
- ``class_iou.{png,svg}``: per-class val IoU, seed means, as a heat map (methods x
  classes), the value written in each cell;
- ``learning_curves.{png,svg}``: the training loss of every run over its steps, from
  ``runs/<label>/fit/metrics.csv``.

`write_level_figure` (a ``--grid`` sweep, beside ``table_levels.md``): ``levels.{png,svg}``,
each method's val mIoU with its interval at every level of the axis.

The files are byte for byte the same for the same records (fixed SVG ids, no dates), so
`--collect` rewrites them as it rewrites the tables. Matplotlib's Agg back end: no screen.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aspp_seg.data.io import write_file

CONFIDENCE = 0.95


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "aspp-seg", "font.size": 8})
    return plt


def _save(figure, out: Path, stem: str) -> list[Path]:
    """Writes `figure` as ``stem.png`` and ``stem.svg`` in `out` (each atomically), with
    no date or software stamp, so that the same figure gives the same bytes."""
    written = []
    for suffix, metadata in ((".png", {"Software": None}), (".svg", {"Date": None})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix[1:], metadata=metadata, dpi=120)
        path = out / f"{stem}{suffix}"
        write_file(path, buffer.getvalue())
        written.append(path)
    return written


def seed_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % t interval of the mean of `values` (None for fewer than two)."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean = float(np.mean(values))
    half = float(stats.t.ppf(1 - (1 - CONFIDENCE) / 2, len(values) - 1)) * float(
        np.std(values, ddof=1) / math.sqrt(len(values))
    )
    return mean - half, mean + half


def _by_method(results: dict[str, dict]) -> dict[str, list[dict]]:
    """Method (group) -> its finished, scored runs, in the order given (`tables.groups`)."""
    from experiments.tables import groups

    methods = {group: [results[label] for label in labels if "val" in results[label]]
               for group, labels in groups(results).items()}  # fmt: skip
    return {group: runs for group, runs in methods.items() if runs}


def _miou_axes(axes, methods: dict[str, list[dict]], offset: float = 0.0, width: float = 0.6,
               label: str | None = None, color=None) -> None:  # fmt: skip
    for x, runs in enumerate(methods.values()):
        values = [100 * r["val"]["miou"] for r in runs]
        mean = float(np.mean(values))
        axes.bar(x + offset, mean, width, color=color, alpha=0.35,
                 label=label if x == 0 else None)  # fmt: skip
        axes.plot([x + offset] * len(values), values, "o", color=color or "k", markersize=3)
        interval = seed_interval(values)
        if interval is not None:
            axes.errorbar(x + offset, mean, yerr=[[mean - interval[0]], [interval[1] - mean]],
                          color=color or "k", capsize=3, linewidth=1)  # fmt: skip


def _learning_curve(metrics: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    with metrics.open() as file:
        for row in csv.DictReader(file):
            if row.get("train/loss"):
                steps.append(int(row["step"]))
                losses.append(float(row["train/loss"]))
    return steps, losses


def write_figures(results: dict[str, dict], out: Path) -> list[Path]:
    """Writes the three figures of one results folder `out` (see the module docstring)
    from `results` (`experiments.runner.collect`'s) and the runs' ``metrics.csv``.
    Nothing is written when no run has val scores."""
    methods = _by_method(results)
    if not methods:
        return []
    plt = _pyplot()
    written = []

    figure, axes = plt.subplots(figsize=(1 + 0.8 * len(methods), 3))
    _miou_axes(axes, methods)
    axes.set_xticks(range(len(methods)), list(methods))
    axes.set_ylabel("val mIoU (%)")
    axes.set_title("val mIoU: runs (dots), mean and 95 % t interval over seeds", fontsize=8)
    figure.tight_layout()
    written += _save(figure, out, "val_miou")
    plt.close(figure)

    columns = next(iter(methods.values()))[0]["val"]["columns"]
    grid = np.array([[100 * np.mean([r["val"]["iou"][c] for r in runs])
                      for c in range(len(columns))] for runs in methods.values()])  # fmt: skip
    figure, axes = plt.subplots(figsize=(1.5 + 0.55 * len(columns), 1 + 0.4 * len(methods)))
    axes.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(methods)), list(methods))
    for (row, column), value in np.ndenumerate(grid):
        axes.text(column, row, f"{value:.0f}", ha="center", va="center",
                  color="w" if value < 50 else "k", fontsize=7)  # fmt: skip
    axes.set_title("val IoU (%) per class, mean over seeds", fontsize=8)
    figure.tight_layout()
    written += _save(figure, out, "class_iou")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(5, 3))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {method: palette[i % len(palette)] for i, method in enumerate(methods)}
    labelled = set()
    for label, result in results.items():
        metrics = out / "runs" / label / "fit" / "metrics.csv"
        group = result["group"]
        if group in colors and metrics.is_file():
            steps, losses = _learning_curve(metrics)
            axes.plot(steps, losses, color=colors[group], linewidth=0.8,
                      label=None if group in labelled else group)  # fmt: skip
            labelled.add(group)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.legend(fontsize=7)
    axes.set_title("learning curves, every run", fontsize=8)
    figure.tight_layout()
    written += _save(figure, out, "learning_curves")
    plt.close(figure)
    return written


def write_level_figure(levels: Sequence[tuple[str, dict[str, dict]]], out: Path) -> list[Path]:
    """``levels.png`` / ``levels.svg`` in `out`: each method's val mIoU (runs, mean, 95 % t
    interval over seeds) side by side for every level of the grid."""
    scored = [(name, _by_method(results)) for name, results in levels]
    scored = [(name, methods) for name, methods in scored if methods]
    if not scored:
        return []
    names = list(dict.fromkeys(m for _, methods in scored for m in methods))
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(1.5 + 1.0 * len(names), 3))
    width = 0.8 / len(scored)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (level, methods) in enumerate(scored):
        aligned = {m: methods.get(m, []) for m in names}
        present = {m: runs for m, runs in aligned.items() if runs}
        offset = (i - (len(scored) - 1) / 2) * width
        for x, method in enumerate(names):
            if method in present:
                _miou_axes(axes, {method: present[method]}, offset=x + offset, width=width,
                           label=level if x == min(names.index(m) for m in present) else None,
                           color=colors[i % len(colors)])  # fmt: skip
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel("val mIoU (%)")
    axes.legend(fontsize=7)
    axes.set_title("val mIoU per level: runs, mean and 95 % t interval over seeds", fontsize=8)
    figure.tight_layout()
    written = _save(figure, out, "levels")
    plt.close(figure)
    return written
