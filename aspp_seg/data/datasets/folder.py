"""Your own data: an image folder and a mask folder per split, and a class YAML; also the
folder pairing that CamVid's layout uses.

Images and masks pair by their path relative to their folder, without the extension:
``images/a/b.jpg`` goes with ``masks/a/b.png`` (or ``masks/a/b<mask_suffix>``). A mask
holds one class index per pixel, as an 8-bit grey image or a palette PNG (PASCAL VOC's
kind, read as its indices; colour-coded RGB masks are refused); a small YAML file names
the classes:

    names: [background, road, car]       # class 0, 1, 2
    palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]   # optional, RGB per class
    ignore_index: 255                     # mask value(s) left out of loss and metrics

The classes, palette and encoding come from that YAML (`load_class_table`), so this
file has no fixed table and no ``--format`` name: ``aspp-seg evaluate --format
classes.yaml`` scores masks against the class YAML given (`class_table_format`). Its data
module is `aspp_seg.data.datamodules.FolderDataModule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from aspp_seg.data.datasets import EvalFormat, stem_key
from aspp_seg.data.io import IMAGE_EXTENSIONS
from aspp_seg.data.labels import IGNORE_INDEX, LabelEncoding, distinct_palette
from aspp_seg.data.scan import EMPTY_SPLIT, MISSING_FOLDER, MISSING_PARTNER, Problem, Sample, Scan
from aspp_seg.errors import ConfigError

# --- classes, palette and encoding: from the class YAML ---


@dataclass(frozen=True)
class ClassTable:
    """Class names, their colours and how mask files encode them."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    encoding: LabelEncoding


def load_class_table(path: str | Path) -> ClassTable:
    """Reads a class YAML (see the module docstring).

    Raises:
        ConfigError: naming the file and the key that is missing or wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class file {path} not found (data.classes); expected a YAML with names")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"class file {path} is not valid YAML: {error}".splitlines()[0]) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("names"), list) or not spec["names"]:
        raise ConfigError(f"class file {path} needs names: a non-empty list of class names")
    names = tuple(str(n) for n in spec["names"])
    if len(names) > IGNORE_INDEX:
        raise ConfigError(f"class file {path} lists {len(names)} classes; at most 255 fit a mask")
    palette = spec.get("palette")
    if palette is None:
        palette = distinct_palette(len(names))
    elif len(palette) != len(names) or any(
        not isinstance(c, list) or len(c) != 3 or not all(0 <= int(v) <= 255 for v in c)
        for c in palette
    ):
        raise ConfigError(
            f"class file {path}: palette must hold one [r, g, b] (0-255) per name "
            f"({len(names)} names)"
        )
    ignore = spec.get("ignore_index", IGNORE_INDEX)
    ignore = [ignore] if isinstance(ignore, int) else ignore
    if not isinstance(ignore, list) or not all(
        isinstance(v, int) and len(names) <= v <= 255 for v in ignore
    ):
        raise ConfigError(
            f"class file {path}: ignore_index must be an int (or list) in {len(names)}-255, "
            f"got {spec.get('ignore_index')!r}"
        )
    encoding = LabelEncoding.indices(path.name, len(names), ignore=ignore)
    return ClassTable(names, tuple(tuple(int(v) for v in c) for c in palette), encoding)


# --- the folder scan ---


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Relative path without the suffix -> file, for files ending in one of `suffixes`."""
    found = {}
    for path in folder.rglob("*"):
        name = path.name.lower()
        for suffix in suffixes:
            if name.endswith(suffix) and path.is_file():
                rel = path.relative_to(folder).as_posix()
                found[rel[: -len(suffix)]] = path
                break
    return found


def scan_folders(
    image_dir: str | Path,
    mask_dir: str | Path,
    *,
    encoding: LabelEncoding,
    mask_suffix: str = ".png",
    setting: str = "data.root",
) -> Scan:
    """Pairs the images in `image_dir` with the masks in `mask_dir` and lists problems.

    Args:
        image_dir: folder of images (any of `IMAGE_EXTENSIONS`, subfolders allowed).
        mask_dir: folder of masks, same relative paths, ending in `mask_suffix`.
        encoding: how the masks store classes.
        mask_suffix: what replaces an image's extension in its mask's name.
        setting: the config key to name when a folder is missing.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    scan = Scan()
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            message = (
                f"folder {folder} not found; expected images in {image_dir} and masks "
                f"with the same names (ending in {mask_suffix}) in {mask_dir} ({setting})"
            )
            scan.problems.append(Problem(MISSING_FOLDER, message))
            return scan
    images = _files(image_dir, IMAGE_EXTENSIONS)
    masks = _files(mask_dir, (mask_suffix.lower(),))
    if not images:
        scan.problems.append(
            Problem(EMPTY_SPLIT, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
        )
    for key in sorted(images):
        if key in masks:
            scan.samples.append(Sample(images[key], masks[key], encoding))
        else:
            message = f"image {images[key]} has no mask file {mask_dir / (key + mask_suffix)}"
            scan.problems.append(Problem(MISSING_PARTNER, message))
    for key in sorted(masks.keys() - images.keys()):
        message = f"mask {masks[key]} has no image file {image_dir / key}.<png|jpg|...>"
        scan.problems.append(Problem(MISSING_PARTNER, message))
    return scan


# --- aspp-seg evaluate ---

FORMATS: tuple[EvalFormat, ...] = ()
"""No fixed format: the classes come from a class YAML (`class_table_format`)."""


def class_table_format(classes: str | Path) -> EvalFormat:
    """The ``--format`` of masks whose classes a class YAML gives: grey or palette PNGs
    of class indices, its ignore value(s) ignored, 255 in a prediction void.

    Raises:
        ConfigError: the YAML is missing or wrong (see `load_class_table`).
    """
    table = load_class_table(classes)
    return EvalFormat(
        name=str(classes),
        class_names=table.names,
        truth=table.encoding,
        prediction=table.encoding.with_void(),
        gt_globs=("*.png",),
        key=stem_key,
        help="masks of class indices as a class YAML gives them",
    )
