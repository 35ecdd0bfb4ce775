"""Scoring folders of predicted label maps against ground truth (``aspp-seg evaluate``).

No model is involved, so results from any method can be scored. Files are matched by
name; per-class IoU and mIoU follow the Cityscapes benchmark definitions (the same
numbers as cityscapesscripts' ``evalPixelLevelSemanticLabeling`` on Cityscapes-format
folders) and go through the same `aspp_seg.evaluation.metrics.scores` as validation and test.

The formats come from the data set files (`aspp_seg.data.datasets`): each names its
classes and the `LabelEncoding`s its data module trains with (Cityscapes labelIds and
trainIds, CamVid, a folder data set's class YAML, or a data set file of your own).
Each file pair is counted as one 256 x 256 histogram of raw (truth, prediction)
values (grey or palette PNGs, read as the indices they hold), read in parallel threads;
the encoding is applied once to the summed histogram, which also tells which values a
file holds. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from aspp_seg.data.datasets import EvalFormat, find_format
from aspp_seg.data.labels import LabelEncoding
from aspp_seg.errors import DataError


def _index(folder: Path, pattern: str, key: Callable[[Path], str], what: str) -> dict:
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob(pattern)):
        name = key(path)
        if name in files:
            raise DataError(f"{what} files {files[name]} and {path} both match {name!r}")
        files[name] = path
    return files


def match_files(
    gt_dir: str | Path, pred_dir: str | Path, fmt: EvalFormat
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pairs every ground-truth file with its prediction.

    Returns:
        (pairs sorted by name, predictions without ground truth).

    Raises:
        DataError: a folder is missing or empty, or a ground-truth file has no prediction
            (the message names how many and the first).
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, flag in ((gt_dir, "--gt"), (pred_dir, "--pred")):
        if not folder.is_dir():
            raise DataError(f"{flag} folder {folder} not found")
    pattern = next((p for p in fmt.gt_globs if next(gt_dir.rglob(p), None)), fmt.gt_globs[-1])
    gt = _index(gt_dir, pattern, fmt.key, "ground-truth")
    if not gt:
        raise DataError(
            f"no ground-truth files {pattern} under --gt {gt_dir} (--format {fmt.name})"
        )
    pred = _index(pred_dir, "*.png", fmt.key, "prediction")
    missing = sorted(gt.keys() - pred.keys())
    if missing:
        first = gt[missing[0]]
        raise DataError(
            f"{len(missing)} of {len(gt)} ground-truth files have no prediction in {pred_dir} "
            f"(first: {first.name}, looked for a .png named {missing[0]}*)"
        )
    extra = [pred[name] for name in sorted(pred.keys() - gt.keys())]
    return [(gt[name], pred[name]) for name in sorted(gt)], extra


def _check(path: Path, counts: np.ndarray, fmt: EvalFormat, role: str) -> None:
    """Refuses a file holding values its encoding does not allow, naming the other
    format of the same data set that the file fits, if just one does."""
    encoding: LabelEncoding = getattr(fmt, role)
    present = counts > 0
    bad = np.flatnonzero(present & ~encoding.valid).tolist()
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        fits = [f.name for f in fmt.alternatives if not (present & ~getattr(f, role).valid).any()]
        hint = f"; it looks like --format {fits[0]}" if len(fits) == 1 else ""
        raise DataError(
            f"{path} holds values {shown}, not valid for --format {fmt.name}: expected "
            f"{encoding.name} ({encoding.allowed}){hint}"
        )


def _pair(gt_path: Path, pred_path: Path, fmt: EvalFormat) -> np.ndarray:
    from aspp_seg.data.io import read_label  # OpenCV and PIL: when scoring, not for --help
    from aspp_seg.evaluation.metrics import pair_histogram

    gt, pred = read_label(gt_path), read_label(pred_path)
    if gt.shape != pred.shape:
        raise DataError(
            f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
            f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}"
        )
    histogram = pair_histogram(gt, pred)
    _check(gt_path, histogram.sum(1), fmt, "truth")
    _check(pred_path, histogram.sum(0), fmt, "prediction")
    return histogram


def evaluate_pairs(
    pairs: Sequence[tuple[Path, Path]], fmt: EvalFormat, *, workers: int | None = None
) -> tuple[dict, np.ndarray]:
    """Scores matched (ground truth, prediction) files.

    Args:
        pairs: (ground-truth path, prediction path) per image.
        fmt: their label format.
        workers: reading threads (the PNG decoders release the GIL); default: CPU count.

    Returns:
        (`scores` of the confusion matrix, the C x (C + 1) matrix whose last column
        counts void predictions).
    """
    workers = workers or os.cpu_count() or 1
    total = np.zeros((256, 256), dtype=np.int64)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for histogram in pool.map(lambda pair: _pair(*pair, fmt), pairs):
            total += histogram
    from aspp_seg.evaluation.metrics import reduce_histogram, scores

    confusion = reduce_histogram(total, fmt.truth.lut, fmt.prediction.lut, len(fmt.class_names))
    return scores(confusion), confusion


def evaluate_boundaries(
    pairs: Sequence[tuple[Path, Path]], fmt: EvalFormat, *, workers: int | None = None
) -> dict:
    """Boundary IoU (d = 2% of each image's diagonal) and the trimap IoU of matched files
    (`aspp_seg.evaluation.boundary`, as validate and test count them): the ``boundary``
    and ``trimap`` entries of their results. Run after `evaluate_pairs`, which checks
    the files; unlike it, this imports torch (``aspp-seg evaluate --boundary``).
    """
    from aspp_seg.data.io import read_label
    from aspp_seg.evaluation.boundary import (
        TRIMAP_WIDTHS,
        describe_distance,
        label_file_counts,
        summarize,
    )

    classes = len(fmt.class_names)

    def count(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        gt, pred = read_label(pair[0]), read_label(pair[1])
        truth, prediction = fmt.truth.lut[gt], fmt.prediction.lut[pred]
        return (*label_file_counts(prediction, truth, classes), gt.shape[:2])

    boundary, trimap, sizes = 0, 0, set()
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for image_boundary, image_trimap, size in pool.map(count, pairs):
            boundary, trimap = boundary + image_boundary, trimap + image_trimap
            sizes.add(size)
    return summarize(boundary, trimap, TRIMAP_WIDTHS, describe_distance(sizes))


def evaluate_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    *,
    format: str | EvalFormat = "cityscapes",
    workers: int | None = None,
) -> dict:
    """`match_files` + `evaluate_pairs`; returns the scores plus ``confusion``, ``pairs``,
    ``extra`` (predictions without ground truth) and ``class_names``.

    Args:
        format: an `EvalFormat`, or what ``--format`` takes (see
            `aspp_seg.data.datasets.find_format`): a format name, a class YAML or a data
            set file.
    """
    fmt = find_format(format) if isinstance(format, str) else format
    pairs, extra = match_files(gt_dir, pred_dir, fmt)
    result, confusion = evaluate_pairs(pairs, fmt, workers=workers)
    return {
        **result,
        "confusion": confusion,
        "pairs": len(pairs),
        "extra": extra,
        "class_names": fmt.class_names,
    }
