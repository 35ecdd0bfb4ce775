"""The data sets of `aspp_seg.data.datasets`: the files of that folder, found by listing it.
Each holds its classes, palette, encodings, scan and ``evaluate`` formats and loads
without torch; its data module is a plain class in `aspp_seg.data.datamodules`."""

from __future__ import annotations

import importlib
import pickle
import sys
import textwrap

import numpy as np
import pytest
from helpers import imported_packages
from jsonargparse._util import get_import_path  # what LightningCLI writes as class_path
from PIL import Image

from aspp_seg.data import datamodules, datasets
from aspp_seg.data.datamodules import SegmentationDataModule
from aspp_seg.data.datasets import find_format, in_repo, known_formats, names, table_columns

DATA_MODULES = sorted(
    name
    for name, value in vars(datamodules).items()
    if isinstance(value, type)
    and issubclass(value, SegmentationDataModule)
    and value is not SegmentationDataModule
)


def test_every_data_set_file_has_its_data_module():
    """``camvid.py`` -> ``CamVidDataModule``: each file of the folder has a data module
    named after it, and each data module a file."""
    stems = sorted(name.removesuffix("DataModule").lower() for name in DATA_MODULES)
    assert stems == sorted(names())


def test_the_data_set_files_and_their_formats_load_without_torch():
    code = (
        "from aspp_seg.data.datasets import names, in_repo, known_formats, find_format\n"
        "modules = [in_repo(name) for name in names()]\n"
        "assert known_formats() and find_format('cityscapes')"
    )
    assert not imported_packages(code) & {"torch", "lightning"}


@pytest.mark.parametrize("name", DATA_MODULES)
def test_a_data_module_is_a_plain_class_under_the_configs_path(name):
    cls = getattr(datamodules, name)
    assert cls is getattr(importlib.import_module("aspp_seg.data"), name)
    assert (cls.__module__, cls.__qualname__) == ("aspp_seg.data.datamodules", name)
    assert get_import_path(cls) == f"aspp_seg.data.{name}"  # the configs' class_path
    assert pickle.loads(pickle.dumps(cls)) is cls
    module = in_repo(name.removesuffix("DataModule").lower())
    if hasattr(module, "CLASSES") and cls.class_names:  # folder: from a class YAML
        assert tuple(cls.class_names) == tuple(module.CLASSES)
        assert tuple(cls.palette) == tuple(module.PALETTE)
        assert len(module.PALETTE) == len(module.CLASSES)


def test_a_name_that_is_no_data_module_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchDataModule'"):
        importlib.import_module("aspp_seg.data").NoSuchDataModule  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'camvid'"):
        importlib.import_module("aspp_seg.data").camvid  # noqa: B018


def test_format_names_are_unique_across_data_set_files():
    found = [fmt.name for name in names() for fmt in in_repo(name).FORMATS]
    assert len(found) == len(set(found)) == len(known_formats())


NEW_DATA_SET = '''
"""Scratch: two classes, masks of class indices, 255 ignored."""

from aspp_seg.data.datasets import EvalFormat, stem_key
from aspp_seg.data.labels import LabelEncoding

CLASSES = ("ground", "thing")
PALETTE = ((0, 0, 0), (255, 255, 255))
COLUMNS = ("Gnd", "Thg")
ENCODING = LabelEncoding.indices("Scratch", len(CLASSES), ignore=[255])

FORMATS = (
    EvalFormat(
        name="scratch",
        class_names=CLASSES,
        truth=ENCODING,
        prediction=ENCODING.with_void(),
        gt_globs=("*.png",),
        key=stem_key,
        help="scratch masks 0..1, 255 = ignore",
    ),
)
'''


@pytest.fixture
def new_data_set(tmp_path, monkeypatch):
    """``scratch_set.py``, a new data set file of the package: written into a folder that joins
    the package's (as if written into ``aspp_seg/data/datasets/``), no other file edited."""
    folder = tmp_path / "new_files"
    folder.mkdir()
    (folder / "scratch_set.py").write_text(textwrap.dedent(NEW_DATA_SET).lstrip())
    monkeypatch.setattr(datasets, "__path__", [*datasets.__path__, str(folder)])
    yield
    sys.modules.pop(f"{datasets.__name__}.scratch_set", None)
    vars(datasets).pop("scratch_set", None)


def test_a_new_data_set_file_is_found_without_editing_another_file(new_data_set, tmp_path, run_cli):
    assert "scratch_set" in names()
    assert known_formats()["scratch"].class_names == ("ground", "thing")
    assert table_columns(("ground", "thing")) == ["Gnd", "Thg"]
    helped = run_cli("evaluate", "--help", cwd=tmp_path)
    assert "scratch: scratch masks 0..1, 255 = ignore" in " ".join(helped.stdout.split())

    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    Image.fromarray(truth).save(tmp_path / "gt" / "a.png")
    Image.fromarray(np.zeros_like(truth)).save(tmp_path / "pred" / "a.png")
    args = ["evaluate", "--gt", "gt", "--pred", "pred", "--format", "scratch"]
    scored = run_cli(*args, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "| Gnd | Thg | mIoU |" in scored.stdout  # its own table columns
    assert find_format("scratch").alternatives == ()
