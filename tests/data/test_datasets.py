"""The data set files of `aspp_seg.data.datasets`: each one holds its classes, palette,
encodings, scan, ``evaluate`` formats and data module; all but the data module load
without torch, and the data module, made on first use, is a class like any other."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest
from jsonargparse._util import get_import_path  # what LightningCLI writes as class_path

from aspp_seg.data.datasets import IN_REPO, in_repo, known_formats

DATA_MODULES = {
    "CityscapesDataModule": "cityscapes",
    "CamVidDataModule": "camvid",
    "FolderDataModule": "folder",
    "DemoDataModule": "demo",
}


def test_every_data_set_file_is_listed_and_has_its_data_module():
    assert sorted(IN_REPO) == sorted(DATA_MODULES.values())


def test_the_data_set_files_and_their_formats_load_without_torch():
    code = (
        "import sys\n"
        "from aspp_seg.data.datasets import IN_REPO, in_repo, known_formats, find_format\n"
        "modules = [in_repo(name) for name in IN_REPO]\n"
        "assert known_formats() and find_format('cityscapes')\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'lightning'}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(DATA_MODULES))
def test_a_data_module_made_on_first_use_is_a_top_level_class(name):
    module = in_repo(DATA_MODULES[name])
    cls = getattr(module, name)
    assert cls is getattr(importlib.import_module("aspp_seg.data"), name)
    assert (cls.__module__, cls.__qualname__) == (module.__name__, name)
    assert cls.__init__.__qualname__ == f"{name}.__init__"
    assert get_import_path(cls) == f"aspp_seg.data.{name}"  # the configs' class_path
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert vars(module)[name] is cls  # made once, then a plain attribute
    if hasattr(module, "CLASSES"):  # folder data sets read theirs from a class YAML
        assert tuple(cls.class_names) == tuple(module.CLASSES)
        assert tuple(cls.palette) == tuple(module.PALETTE)
        assert len(module.PALETTE) == len(module.CLASSES)


def test_a_name_a_data_set_file_does_not_make_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchDataModule'"):
        in_repo("camvid").NoSuchDataModule  # noqa: B018


def test_format_names_are_unique_across_data_set_files():
    names = [fmt.name for name in IN_REPO for fmt in in_repo(name).FORMATS]
    assert sorted(names) == sorted(known_formats()) == ["camvid", "cityscapes", "trainid"]
