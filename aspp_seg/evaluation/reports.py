"""Per-class IoU tables (Markdown, CSV) and the files of an evaluation. Column headers
come from the data set file of the classes (Cityscapes: the study's Table 1 columns,
`aspp_seg.data.datasets.cityscapes.COLUMNS`), else they are the class names."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aspp_seg.data.datasets import table_columns
from aspp_seg.data.io import replacing

if TYPE_CHECKING:
    import torch


def column_names(class_names: Sequence[str]) -> list[str]:
    """Table headers: the short ``COLUMNS`` of the data set with these classes (the
    study's Table 1 names for Cityscapes), else the class names."""
    return table_columns(class_names)


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or np.isnan(value):
        return "-"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


@dataclass(frozen=True)
class IoURow:
    """One row of an IoU table.

    Args:
        values: C per-class IoUs then the mIoU, as fractions (None or NaN: ``-``).
        labels: texts of the leading columns (`iou_table`'s ``label_columns``).
        signed: print a sign, for a row of differences.
    """

    values: Sequence[float | None]
    labels: Sequence[str] = ()
    signed: bool = False


def iou_table(
    rows: Sequence[IoURow],
    class_names: Sequence[str],
    *,
    label_columns: Sequence[str] = (),
    vertical: bool = False,
) -> str:
    """Markdown table of per-class IoU (%) and mIoU; the one IoU formatter of aspp-seg.

    Wide (default): one column per class (`column_names`: for Cityscapes the study's
    Table 1 headers)
    and mIoU, one line per row, led by the row's labels. Vertical: one line per class
    and mIoU, one column per row (headed by its joined labels, else ``IoU (%)``), for
    narrow displays (TensorBoard text).

    Args:
        rows: the rows, each with len(class_names) + 1 values.
        class_names: the C class names.
        label_columns: headers of the leading label columns (wide layout).
        vertical: the transposed layout.
    """
    names = [*column_names(class_names), "mIoU"]
    for row in rows:
        if len(row.values) != len(names):
            raise ValueError(f"a row has {len(row.values)} values for {len(names)} columns")
    cells = [[_pct(v, row.signed) for v in row.values] for row in rows]
    if vertical:
        header = ["class", *(" ".join(r.labels) or "IoU (%)" for r in rows)]
        body = [[name, *(c[i] for c in cells)] for i, name in enumerate(names)]
    else:
        header = [*label_columns, *names]
        body = [[*row.labels, *c] for row, c in zip(rows, cells, strict=True)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def iou_markdown(iou: Sequence[float], miou: float, class_names: Sequence[str]) -> str:
    """One-row Markdown table of per-class IoU (%) and mIoU, the study's Table 1 layout."""
    return iou_table([IoURow([*iou, miou])], class_names)


def iou_csv(iou: Sequence[float], miou: float, class_names: Sequence[str]) -> str:
    """The same table as CSV (IoU in %, empty where undefined)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*column_names(class_names), "mIoU"])
    writer.writerow(["" if np.isnan(v) else f"{100 * v:.4f}" for v in [*iou, miou]])
    return buf.getvalue()


def trimap_table(trimap: dict, class_names: Sequence[str]) -> str:
    """Markdown table of the trimap IoU (%): one row per band width (px to each side of
    a truth boundary), per-class IoU and mIoU.

    Args:
        trimap: ``{"widths": W ints, "iou": W x C, "miou": W}`` (an evaluation's
            ``result["trimap"]``).
        class_names: the C class names.
    """
    rows = [IoURow([*iou, miou], labels=[str(width)])
            for width, iou, miou in zip(trimap["widths"], trimap["iou"], trimap["miou"],
                                        strict=True)]  # fmt: skip
    return iou_table(rows, class_names, label_columns=["band (px)"])


def trimap_csv(trimap: dict, class_names: Sequence[str]) -> str:
    """The trimap table as CSV (IoU in %, empty where undefined)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["band (px)", *column_names(class_names), "mIoU"])
    for width, iou, miou in zip(trimap["widths"], trimap["iou"], trimap["miou"], strict=True):
        values = ["" if np.isnan(v) else f"{100 * v:.4f}" for v in [*iou, miou]]
        writer.writerow([str(width), *values])
    return buf.getvalue()


def boundary_files(folder: str | Path, stage: str) -> list[Path]:
    """The files `save_boundary_results` writes into `folder`."""
    ends = ("_boundary_iou.md", "_boundary_iou.csv", "_boundary_counts.npy",
            "_trimap_iou.md", "_trimap_iou.csv", "_trimap_confusion.npy")  # fmt: skip
    return [Path(folder) / f"{stage}{end}" for end in ends]


def save_boundary_results(
    folder: str | Path, stage: str, result: dict, class_names: Sequence[str]
) -> list[Path]:
    """Writes an evaluation's boundary metrics (`aspp_seg.evaluation.boundary`), if it
    has them: ``{stage}_boundary_iou.md`` / ``.csv`` (per-class Boundary IoU, the layout
    of the IoU tables), ``{stage}_boundary_counts.npy`` (C x 2: intersection, union),
    ``{stage}_trimap_iou.md`` / ``.csv`` (per band width) and
    ``{stage}_trimap_confusion.npy`` (W x C x C), each complete or not at all
    (`replacing`). Returns the paths (`boundary_files`).
    """
    b_npy, t_md, t_csv, t_npy = boundary_files(folder, stage)[2:]
    paths = []
    if "boundary" in result:
        boundary = result["boundary"]
        paths += write_iou_table(folder, f"{stage}_boundary_iou", boundary, class_names)
        paths.append(_save_npy(b_npy, boundary["counts"]))
    if "trimap" in result:
        trimap = result["trimap"]
        for path, text in ((t_md, trimap_table(trimap, class_names)),
                           (t_csv, trimap_csv(trimap, class_names))):  # fmt: skip
            with replacing(path) as staged:
                staged.write_text(text)
        paths += [t_md, t_csv, _save_npy(t_npy, trimap["confusion"])]
    return paths


def _save_npy(path: Path, array) -> Path:
    with replacing(path) as staged:
        np.save(staged, array.cpu().numpy() if hasattr(array, "cpu") else np.asarray(array))
    return path


def write_iou_table(
    folder: str | Path, stem: str, result: dict, class_names: Sequence[str]
) -> list[Path]:
    """Writes ``{stem}.md`` and ``{stem}.csv`` into `folder` (each complete or not at
    all: `replacing`); returns their paths."""
    folder = Path(folder)
    md, cs = folder / f"{stem}.md", folder / f"{stem}.csv"
    for path, text in (
        (md, iou_markdown(result["iou"], result["miou"], class_names)),
        (cs, iou_csv(result["iou"], result["miou"], class_names)),
    ):
        with replacing(path) as staged:  # creates the folder
            staged.write_text(text)
    return [md, cs]


def result_files(folder: str | Path, stem: str) -> list[Path]:
    """The files `save_results` writes into `folder`: ``{stem}.md``, ``{stem}.csv``,
    ``{stem}_confusion.npy`` and ``{stem}_confusion.png``."""
    ends = (".md", ".csv", "_confusion.npy", "_confusion.png")
    return [Path(folder) / f"{stem}{end}" for end in ends]


def save_results(
    folder: str | Path,
    stem: str,
    result: dict,
    confusion: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
) -> list[Path]:
    """Writes a run's evaluation: ``{stem}.md`` / ``.csv`` (per-class IoU, the study's
    Table 1 columns), ``{stem}_confusion.npy`` (raw counts) and ``{stem}_confusion.png``
    (row-normalised plot), each complete or not at all (`replacing`). Returns the paths
    (`result_files`).
    """
    from aspp_seg.evaluation.visualize import plot_confusion

    paths = write_iou_table(folder, stem, result, class_names)
    npy, png = result_files(folder, stem)[2:]
    matrix = confusion.cpu().numpy() if hasattr(confusion, "cpu") else np.asarray(confusion)
    with replacing(npy) as staged:
        np.save(staged, matrix)
    title = f"{stem}: mIoU {_pct(result['miou'])}, pixel acc. {_pct(result['pixel_acc'])}"
    with replacing(png) as staged:
        plot_confusion(matrix, class_names, staged, title=title)
    return [*paths, npy, png]
