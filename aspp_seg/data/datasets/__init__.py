"""One file per data set: what fit, predict and ``aspp-seg evaluate`` know about its files.

A data set file holds, top to bottom:

    CLASSES, PALETTE   the C class names in label order, an RGB colour for each
    COLUMNS            optional: short table headers (Cityscapes: the study's Table 1)
    encodings          the `LabelEncoding`(s) of its label files (`aspp_seg.data.labels`)
    scan               which files make a split: a `Scan` of `Sample`s and `Problem`s
    FORMATS            its ``aspp-seg evaluate --format``s (`EvalFormat`), which decode
                       files with the same encodings as training

The data sets of this package are the files in this folder (`names`: a new file is a new
data set, listed nowhere else), e.g. `cityscapes`, or `folder` (your own image and mask
folders, its classes from a YAML). ``aspp-seg evaluate`` reads their formats
(`known_formats`, `find_format`).

The files are plain Python and numpy: ``aspp-seg evaluate`` imports every one of them and
must not import torch or Lightning (about 4 s; its whole command scores 30 full-size
Cityscapes pairs faster than cityscapesscripts). Each data set's data module (a
LightningDataModule) is a plain class in `aspp_seg.data.datamodules`, which only the
Lightning side imports.

A data set of your own is one file anywhere on the Python path, laid out like these and
holding its data module too (a top-level class; ``evaluate --format`` then imports
Lightning for that file only), plus a YAML: ``data: {class_path: my_data.MyDataModule}``
trains it and ``aspp-seg evaluate --format my_data`` (or ``--format path/to/my_data.py``)
scores predictions with its ``FORMATS``; `tests/data/test_data_seam.py` adds one that way.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from aspp_seg.errors import DataError

if TYPE_CHECKING:
    from aspp_seg.data.labels import LabelEncoding


def names() -> tuple[str, ...]:
    """The data set files of this package, by module name: every module in this folder,
    so that adding a data set is adding its file."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)))


@dataclass(frozen=True)
class EvalFormat:
    """One ``aspp-seg evaluate --format``: which files to pair and the `LabelEncoding`s
    that decode them, the same objects the data set's data module trains with.

    Attributes:
        name: the ``--format`` value.
        class_names: the C evaluated classes.
        truth: encoding of the ground-truth files (value -> class, 255: ignored).
        prediction: encoding of the predictions (value -> class, 255: void).
        gt_globs: patterns of the ground-truth files under ``--gt`` (recursive); the
            first that matches any file is used.
        key: file -> the name that pairs truth and prediction.
        help: one line for ``aspp-seg evaluate --help``.
        alternatives: the other formats of the same data set file; an error suggests
            one that a file fits instead (set by `find_format`).
    """

    name: str
    class_names: tuple[str, ...]
    truth: LabelEncoding
    prediction: LabelEncoding
    gt_globs: tuple[str, ...]
    key: Callable[[Path], str]
    help: str = ""
    alternatives: tuple[EvalFormat, ...] = ()


_STRIP_SUFFIXES = (
    "_gtFine_labelTrainIds", "_gtFine_labelIds", "_labelTrainIds", "_labelIds", "_trainIds",
    "_leftImg8bit", "_prediction", "_pred",
)  # fmt: skip


def stem_key(path: Path) -> str:
    """The file stem without a known label / image suffix (``_gtFine_labelTrainIds``...)."""
    stem = path.stem
    for suffix in _STRIP_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def in_repo(name: str) -> ModuleType:
    """The data set file `name` of this package (one of `names`)."""
    return importlib.import_module(f"{__name__}.{name}")


def load(source: str) -> ModuleType:
    """A data set file: one of `names`, a module path (``my_data``) or a ``.py`` file.

    Raises:
        DataError: nothing importable has that name.
    """
    if source in names():
        return in_repo(source)
    if source.endswith(".py"):
        return _load_file(Path(source))
    try:
        found = all(part.isidentifier() for part in source.split(".")) and (
            importlib.util.find_spec(source) is not None
        )
    except (ImportError, ValueError):  # a parent package is missing
        found = False
    if not found:
        raise DataError(f"no data set file {source!r} (a module path, or a .py file)")
    return importlib.import_module(source)


def _load_file(path: Path) -> ModuleType:
    """Imports a ``.py`` file as the module named by its stem (so that the classes in it
    are ``<stem>.<name>``, as a config that puts its folder on the path names them)."""
    if not path.is_file():
        raise DataError(f"data set file {path} not found")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return loaded
        raise DataError(f"data set file {path}: a module {name!r} is imported already")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def formats_of(module: ModuleType) -> tuple[EvalFormat, ...]:
    """The ``FORMATS`` a data set file defines."""
    formats = getattr(module, "FORMATS", None)
    if formats is None:
        raise DataError(f"{module.__name__} is no data set file: it defines no FORMATS")
    return tuple(formats)


def known_formats() -> dict[str, EvalFormat]:
    """The ``--format``s of this package's data set files, by name."""
    return {fmt.name: fmt for name in names() for fmt in formats_of(in_repo(name))}


def find_format(spec: str) -> EvalFormat:
    """The format `spec` names, with its `EvalFormat.alternatives`.

    Args:
        spec: a format of this package (`known_formats`); a class YAML (``.yaml``,
            the masks of a folder data set); or a data set file, as a module path or a
            ``.py`` file: its only format, or ``:NAME`` for one of several.

    Raises:
        DataError: naming the known formats when `spec` is none of these.
    """
    for name in names():
        formats = formats_of(in_repo(name))
        for fmt in formats:
            if fmt.name == spec:
                return _chosen(fmt, formats)
    if spec.endswith((".yaml", ".yml")):
        return in_repo("folder").class_table_format(spec)
    source, _, name = spec.rpartition(":")
    if not (source and name.isidentifier()):
        source, name = spec, ""
    try:
        module = load(source)
    except DataError as error:
        if source.endswith(".py"):
            raise
        raise DataError(f"--format {spec!r} is not known; allowed: {_allowed()}") from error
    formats = formats_of(module)
    by_name = {fmt.name: fmt for fmt in formats}
    if name in by_name or (not name and len(formats) == 1):
        return _chosen(by_name[name] if name else formats[0], formats)
    if not formats:  # the demo (scored as Cityscapes), the folder data set (a class YAML)
        raise DataError(
            f"--format {spec!r}: that data set has no format of its own; allowed: {_allowed()}"
        )
    if name:
        raise DataError(f"{source} has no format {name!r}; it has: {', '.join(by_name)}")
    raise DataError(
        f"{source} defines {len(formats)} formats; pick one with --format {source}:NAME "
        f"(NAME: {', '.join(by_name)})"
    )


def _allowed() -> str:
    return (
        f"{', '.join(known_formats())}, a class YAML (a folder data set's data.classes), or a "
        "data set file: a module path (my_data) or a .py file, :NAME picking one of its formats"
    )


def _chosen(fmt: EvalFormat, formats: Sequence[EvalFormat]) -> EvalFormat:
    """`fmt` knowing the other formats of its data set file."""
    return dataclasses.replace(fmt, alternatives=tuple(f for f in formats if f is not fmt))


def table_columns(class_names: Sequence[str]) -> list[str]:
    """Table headers for `class_names`: the short ``COLUMNS`` of the data set file of
    this package with these classes (Cityscapes: the study's Table 1), else the names."""
    for name in names():
        module = in_repo(name)
        columns = getattr(module, "COLUMNS", None)
        if columns is not None and tuple(module.CLASSES) == tuple(class_names):
            return list(columns)
    return list(class_names)
