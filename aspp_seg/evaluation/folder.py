"""Scoring folders of predicted label maps against ground truth (``aspp-seg evaluate``).

No model is involved, so results from any method can be scored. Files are matched by
name; per-class IoU and mIoU follow the Cityscapes benchmark definitions (the same
numbers as cityscapesscripts' ``evalPixelLevelSemanticLabeling`` on Cityscapes-format
folders) and go through the same `aspp_seg.evaluation.metrics.scores` as validation and test.

Each file pair is counted as one 256 x 256 histogram of raw (truth, prediction)
values (grey or palette PNGs, read as the indices they hold), read in parallel threads;
the label encoding (labelIds, trainIds, CamVid: the data modules' own `LabelEncoding`s)
is applied once to the summed histogram, which also tells which values a file holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aspp_seg.data.labels import (
    CAMVID_CLASSES,
    CAMVID_ENCODING,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_TRAIN_IDS,
    IGNORE_INDEX,
    LabelEncoding,
    guess_cityscapes_kind,
)
from aspp_seg.errors import DataError

_STRIP_SUFFIXES = (
    "_gtFine_labelTrainIds", "_gtFine_labelIds", "_labelTrainIds", "_labelIds", "_trainIds",
    "_leftImg8bit", "_prediction", "_pred",
)  # fmt: skip


def cityscapes_key(path: Path) -> str:
    """``<city>_<seq>_<frame>``: the official script finds predictions by this prefix."""
    return "_".join(path.stem.split("_")[:3])


def stem_key(path: Path) -> str:
    """The file stem without a known label / image suffix (``_gtFine_labelTrainIds``...)."""
    stem = path.stem
    for suffix in _STRIP_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _also_void(encoding: LabelEncoding, value: int = IGNORE_INDEX) -> LabelEncoding:
    """`encoding` that also accepts `value` (scored as a void prediction)."""
    valid = encoding.valid.copy()
    valid[value] = True
    lut = encoding.lut.copy()
    lut[value] = IGNORE_INDEX
    return LabelEncoding(encoding.name, lut, valid, f"{encoding.allowed}, {value} (void)")


@dataclass(frozen=True)
class EvalFormat:
    """One ``--format``: which files to pair and the `LabelEncoding`s that decode them,
    the same objects the data modules train with (`aspp_seg.data.labels`).

    Attributes:
        name: the ``--format`` value.
        class_names: the C evaluated classes.
        truth: encoding of the ground-truth files (value -> class, 255: ignored).
        prediction: encoding of the predictions (value -> class, 255: void).
        gt_glob: ground-truth files under ``--gt`` (recursive).
        key: file -> the name that pairs truth and prediction.
    """

    name: str
    class_names: tuple[str, ...]
    truth: LabelEncoding
    prediction: LabelEncoding
    gt_glob: str
    key: Callable[[Path], str]


FORMATS: dict[str, EvalFormat] = {
    "cityscapes": EvalFormat(
        name="cityscapes",
        class_names=CITYSCAPES_CLASSES,
        truth=CITYSCAPES_LABEL_IDS,
        prediction=CITYSCAPES_LABEL_IDS,
        gt_glob="*_gtFine_labelIds.png",
        key=cityscapes_key,
    ),
    "trainid": EvalFormat(
        name="trainid",
        class_names=CITYSCAPES_CLASSES,
        truth=CITYSCAPES_TRAIN_IDS,
        prediction=CITYSCAPES_TRAIN_IDS,
        gt_glob="*.png",
        key=stem_key,
    ),
    "camvid": EvalFormat(
        name="camvid",
        class_names=CAMVID_CLASSES,
        truth=CAMVID_ENCODING,
        prediction=_also_void(CAMVID_ENCODING),
        gt_glob="*.png",
        key=stem_key,
    ),
}
_FORMAT_OF_KIND = {CITYSCAPES_LABEL_IDS.name: "cityscapes", CITYSCAPES_TRAIN_IDS.name: "trainid"}


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
    pattern = fmt.gt_glob
    if fmt.name == "trainid" and next(gt_dir.rglob("*_labelTrainIds.png"), None):
        pattern = "*_labelTrainIds.png"  # a Cityscapes gtFine folder holds several kinds
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


def _check(path: Path, counts: np.ndarray, encoding: LabelEncoding, fmt: EvalFormat) -> None:
    present = counts > 0
    bad = np.flatnonzero(present & ~encoding.valid).tolist()
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        other = _FORMAT_OF_KIND.get(guess_cityscapes_kind(present))
        hint = f"; it looks like --format {other}" if other and other != fmt.name else ""
        raise DataError(
            f"{path} holds values {shown}, not valid for --format {fmt.name}: expected "
            f"{encoding.name} ({encoding.allowed}){hint}"
        )


def _pair(gt_path: Path, pred_path: Path, fmt: EvalFormat) -> np.ndarray:
    from aspp_seg.data.io import read_label  # torch: imported when scoring, not for --help
    from aspp_seg.evaluation.metrics import pair_histogram

    gt, pred = read_label(gt_path), read_label(pred_path)
    if gt.shape != pred.shape:
        raise DataError(
            f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
            f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}"
        )
    histogram = pair_histogram(gt, pred)
    _check(gt_path, histogram.sum(1), fmt.truth, fmt)
    _check(pred_path, histogram.sum(0), fmt.prediction, fmt)
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


def evaluate_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    *,
    format: str = "cityscapes",
    workers: int | None = None,
) -> dict:
    """`match_files` + `evaluate_pairs`; returns the scores plus ``confusion``, ``pairs``,
    ``extra`` (predictions without ground truth) and ``class_names``."""
    if format not in FORMATS:
        raise DataError(f"--format {format!r} is not known; allowed: {', '.join(FORMATS)}")
    fmt = FORMATS[format]
    pairs, extra = match_files(gt_dir, pred_dir, fmt)
    result, confusion = evaluate_pairs(pairs, fmt, workers=workers)
    return {
        **result,
        "confusion": confusion,
        "pairs": len(pairs),
        "extra": extra,
        "class_names": fmt.class_names,
    }
