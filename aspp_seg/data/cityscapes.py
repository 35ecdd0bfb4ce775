"""The Cityscapes folder layout: which files make a split, and which labels they hold.

A label file is ``*_gtFine_labelTrainIds.png`` (written by `aspp-seg prepare-cityscapes`,
trainIds as is) when present, else ``*_gtFine_labelIds.png`` (the download; labelIds
mapped to trainIds on the fly). Coarse annotations are ``gtCoarse/`` with the same
names. Each file is checked, when read, to hold the kind its name says.
"""

from __future__ import annotations

from pathlib import Path

from aspp_seg.data.dataset import (
    EMPTY_SPLIT,
    MISSING_FOLDER,
    MISSING_PARTNER,
    Problem,
    Sample,
    Scan,
)
from aspp_seg.data.labels import CITYSCAPES_ENCODINGS
from aspp_seg.errors import ConfigError

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
            scan.samples.append(Sample(images[stem], path, CITYSCAPES_ENCODINGS[kind]))
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
