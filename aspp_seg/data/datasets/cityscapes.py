"""Cityscapes: its 19 classes and palette, the labelIds / labelTrainIds encodings, the
folder scan and the ``evaluate`` formats ``cityscapes`` and ``trainid``; its data module
is `aspp_seg.data.datamodules.CityscapesDataModule`.

The class table is built once from `cityscapesscripts.helpers.labels`; there is no
second hand-typed copy. A label file is ``*_gtFine_labelTrainIds.png`` (written by
``aspp-seg prepare-cityscapes``, trainIds as is) when present, else
``*_gtFine_labelIds.png`` (the download; labelIds mapped to trainIds on the fly). Coarse
annotations are ``gtCoarse/`` with the same names. Each file is checked, when read, to
hold the kind its name says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from aspp_seg.data.datasets import EvalFormat, stem_key
from aspp_seg.data.labels import IGNORE_INDEX, LabelEncoding
from aspp_seg.data.scan import EMPTY_SPLIT, MISSING_FOLDER, MISSING_PARTNER, Problem, Sample, Scan
from aspp_seg.errors import ConfigError

# --- classes and palette ---

_EVAL_LABELS = sorted(
    (lb for lb in _CS_LABELS if 0 <= lb.trainId < IGNORE_INDEX), key=lambda lb: lb.trainId
)

CLASSES: tuple[str, ...] = tuple(lb.name for lb in _EVAL_LABELS)
"""The 19 evaluated classes, in trainId order."""

PALETTE: tuple[tuple[int, int, int], ...] = tuple(lb.color for lb in _EVAL_LABELS)
"""RGB colour of each trainId, from the official table."""

NUM_CLASSES = len(CLASSES)

COLUMNS: tuple[str, ...] = (
    "Road", "Sidewalk", "Building", "Wall", "Fence", "Pole", "T.Light", "T.Sign", "Veg.",
    "Terrain", "Sky", "Person", "Rider", "Car", "Truck", "Bus", "Train", "M.bike", "Bike",
)  # fmt: skip
"""Short table headers: the columns of the study's Table 1, in trainId order."""

# --- label encodings ---

NAME_TO_LABEL_ID: dict[str, int] = {lb.name: lb.id for lb in _CS_LABELS if lb.id >= 0}


def _label_id_to_train_id() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lb in _CS_LABELS:
        if 0 <= lb.id < 256 and 0 <= lb.trainId < IGNORE_INDEX:
            lut[lb.id] = lb.trainId
    return lut


def _train_id_to_label_id() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # 0 = "unlabeled" for ignored pixels
    for lb in _EVAL_LABELS:
        lut[lb.trainId] = lb.id
    return lut


LABEL_ID_TO_TRAIN_ID: np.ndarray = _label_id_to_train_id()
"""uint8[256] lookup: Cityscapes labelId -> trainId (255 for classes not evaluated)."""

TRAIN_ID_TO_LABEL_ID: np.ndarray = _train_id_to_label_id()
"""uint8[256] lookup: trainId -> labelId (the test-server format); 255 -> 0."""

VALID_LABEL_IDS = frozenset(lb.id for lb in _CS_LABELS if lb.id >= 0)
"""Every labelId that may appear in a `*_gtFine_labelIds.png`."""


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a labelId map (H x W, uint8) to trainIds (H x W, uint8; 255 = ignore)."""
    return LABEL_ID_TO_TRAIN_ID[label_ids]


def guess_kind(present: np.ndarray) -> str | None:
    """``labelIds`` or ``labelTrainIds`` from the values a file holds (bool[256]).

    A trainId file holds 255 wherever a pixel is void and nothing in 19..33; a labelId
    file never holds 255 and holds 19..33 wherever there is sky, vegetation, a car, ...
    None when the values fit neither or both (e.g. only values 0..18, no 255).
    """
    fits = [e.name for e in ENCODINGS.values() if not (present & ~e.valid).any()]
    return fits[0] if len(fits) == 1 else None


def _look_alike(present: np.ndarray) -> str | None:
    kind = guess_kind(present)
    return None if kind is None else f"Cityscapes {kind}"


def _label_ids() -> LabelEncoding:
    valid = np.zeros(256, dtype=bool)
    valid[sorted(VALID_LABEL_IDS)] = True
    allowed = f"0-{max(VALID_LABEL_IDS)}"
    return LabelEncoding("labelIds", LABEL_ID_TO_TRAIN_ID, valid, allowed, _look_alike)


def _train_ids() -> LabelEncoding:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    valid = np.zeros(256, dtype=bool)
    valid[:NUM_CLASSES] = valid[IGNORE_INDEX] = True
    allowed = f"0-{NUM_CLASSES - 1}, 255"
    return LabelEncoding("labelTrainIds", lut, valid, allowed, _look_alike)


LABEL_IDS = _label_ids()
"""``*_gtFine_labelIds.png``: the 34 Cityscapes labelIds, mapped to trainIds on the fly."""

TRAIN_IDS = _train_ids()
"""``*_gtFine_labelTrainIds.png`` (from `aspp-seg prepare-cityscapes`): trainIds as is."""

ENCODINGS = {e.name: e for e in (LABEL_IDS, TRAIN_IDS)}

# --- the folder layout ---

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
LABEL_KINDS = ("auto", "labelTrainIds", "labelIds")
"""``auto``: labelTrainIds where the file exists, else labelIds."""
SPLITS = ("train", "val", "test", "trainval", "train_extra")
"""``trainval`` is train + val; ``train_extra`` has coarse annotations only."""
ANNOTATIONS = ("gtFine", "gtCoarse")
LAYOUT = (
    "leftImg8bit/{split}/<city>/<city>_<seq>_<frame>" + IMAGE_SUFFIX + " and "
    "{annotation}/{split}/<city>/<city>_<seq>_<frame>_{annotation}_labelIds.png "
    "(or _labelTrainIds.png)"
)


def label_suffix(annotation: str, kind: str) -> str:
    """``_gtFine_labelIds.png`` and the like."""
    return f"_{annotation}_{kind}.png"


def _stems(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.name[: -len(suffix)]: p for p in folder.glob(f"*/*{suffix}")}


def scan_split(
    root: str | Path,
    split: str,
    *,
    annotation: str = "gtFine",
    label_kind: str = "auto",
) -> Scan:
    """Finds the (image, label) files of a split and every layout problem.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/`` (and ``gtCoarse/``).
        split: one of `SPLITS`.
        annotation: ``gtFine`` or ``gtCoarse``.
        label_kind: one of `LABEL_KINDS`.
    """
    if split not in SPLITS:
        raise ConfigError(f"Cityscapes split {split!r} is unknown; allowed: {SPLITS}")
    if annotation not in ANNOTATIONS:
        raise ConfigError(f"annotation={annotation!r} is unknown; allowed: {ANNOTATIONS}")
    if label_kind not in LABEL_KINDS:
        raise ConfigError(f"data.label_kind={label_kind!r} is unknown; allowed: {LABEL_KINDS}")
    scan = Scan()
    for part in ("train", "val") if split == "trainval" else (split,):
        _scan_part(Path(root), part, annotation, label_kind, scan)
    return scan


def _scan_part(root: Path, split: str, annotation: str, label_kind: str, scan: Scan) -> None:
    layout = LAYOUT.format(split=split, annotation=annotation)
    image_dir = root / "leftImg8bit" / split
    label_dir = root / annotation / split
    for folder in (root, image_dir, label_dir):
        if not folder.is_dir():
            message = (
                f"Cityscapes folder {folder} not found; expected {layout} under data.root={root}"
            )
            scan.problems.append(Problem(MISSING_FOLDER, message))
            return
    images = _stems(image_dir, IMAGE_SUFFIX)
    kinds = ("labelTrainIds", "labelIds") if label_kind == "auto" else (label_kind,)
    labels = {kind: _stems(label_dir, label_suffix(annotation, kind)) for kind in kinds}
    if not images:
        scan.problems.append(Problem(EMPTY_SPLIT, f"no images in {image_dir}; expected {layout}"))
    for stem in sorted(images):
        found = [(kind, labels[kind][stem]) for kind in kinds if stem in labels[kind]]
        if found:
            kind, path = found[0]
            scan.samples.append(Sample(images[stem], path, ENCODINGS[kind]))
            continue
        name = stem + label_suffix(annotation, kinds[-1])
        expected = label_dir / images[stem].parent.name / name
        message = f"image {images[stem]} has no label file {expected}"
        scan.problems.append(Problem(MISSING_PARTNER, message))
    for kind in kinds:
        for stem in sorted(labels[kind].keys() - images.keys()):
            path = labels[kind][stem]
            expected = image_dir / path.parent.name / (stem + IMAGE_SUFFIX)
            scan.problems.append(
                Problem(MISSING_PARTNER, f"label {path} has no image file {expected}")
            )


def find_samples(
    root: str | Path, split: str, *, annotation: str = "gtFine", label_kind: str = "auto"
) -> list[Sample]:
    """The samples of a split, sorted by image name.

    Raises:
        DataError: naming the first missing folder, image without its label, label
            without its image, or empty split.
    """
    return scan_split(root, split, annotation=annotation, label_kind=label_kind).raise_first()


# --- aspp-seg evaluate ---


def frame_key(path: Path) -> str:
    """``<city>_<seq>_<frame>``: the official script finds predictions by this prefix."""
    return "_".join(path.stem.split("_")[:3])


FORMATS = (
    EvalFormat(
        name="cityscapes",
        class_names=CLASSES,
        truth=LABEL_IDS,
        prediction=LABEL_IDS,
        gt_globs=("*_gtFine_labelIds.png",),
        key=frame_key,
        help="*_gtFine_labelIds.png vs labelId predictions named <city>_<seq>_<frame>*.png "
        "(the test-server format)",
    ),
    EvalFormat(
        name="trainid",
        class_names=CLASSES,
        truth=TRAIN_IDS,
        prediction=TRAIN_IDS,
        # a Cityscapes gtFine folder holds several kinds: its labelTrainIds if there are any
        gt_globs=("*_labelTrainIds.png", "*.png"),
        key=stem_key,
        help="Cityscapes trainIds, 255 = ignore",
    ),
)
