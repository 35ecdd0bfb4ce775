"""Cityscapes layout: label kinds, trainval, coarse annotations, settings checked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from aspp_seg.data import CityscapesDataModule
from aspp_seg.data.datasets.cityscapes import (
    LABEL_IDS,
    TRAIN_IDS,
    guess_kind,
    scan_split,
    to_train_ids,
)
from aspp_seg.data.labels import label_values
from aspp_seg.errors import ConfigError, DataError


def test_kind_is_guessed_from_values():
    label_ids = np.array([[7, 8, 11, 23, 26, 1]], np.uint8)  # road .. car, ego vehicle
    assert guess_kind(label_values(label_ids)) == "labelIds"
    assert guess_kind(label_values(to_train_ids(label_ids))) == "labelTrainIds"
    assert guess_kind(label_values(np.array([[0, 5, 18]], np.uint8))) is None
    assert guess_kind(label_values(np.array([[40]], np.uint8))) is None
    assert LABEL_IDS.mistaken_for(label_values(to_train_ids(label_ids))) == (
        "Cityscapes labelTrainIds"
    )
    assert TRAIN_IDS.mistaken_for(label_values(label_ids)) == "Cityscapes labelIds"
    assert LABEL_IDS.mistaken_for(label_values(label_ids)) is None  # it fits


@pytest.fixture
def tree(tiny_cityscapes, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(tiny_cityscapes, root)
    return root


def test_train_ids_preferred_per_file_and_label_kind_setting(tree):
    first = sorted((tree / "gtFine" / "train").glob("*/*_gtFine_labelIds.png"))[0]
    train_ids = first.with_name(first.name.replace("_labelIds", "_labelTrainIds"))
    Image.fromarray(to_train_ids(np.asarray(Image.open(first)))).save(train_ids)
    samples = scan_split(tree, "train").samples
    assert samples[0].label == train_ids and samples[0].encoding is TRAIN_IDS
    assert all(s.encoding is LABEL_IDS for s in samples[1:])
    forced = scan_split(tree, "train", label_kind="labelIds").samples
    assert forced[0].label == first
    only_train_ids = scan_split(tree, "train", label_kind="labelTrainIds")
    assert len(only_train_ids.samples) == 1 and len(only_train_ids.problems) == 15

    dm = CityscapesDataModule(str(tree), crop_size=None, num_workers=0)
    dm.setup("fit")
    by_label_ids = CityscapesDataModule(
        str(tree), crop_size=None, num_workers=0, label_kind="labelIds"
    )
    by_label_ids.setup("fit")
    assert np.array_equal(
        dm.datasets["train"][0]["mask"], by_label_ids.datasets["train"][0]["mask"]
    )


def test_trainval_and_coarse(tree):
    dm = CityscapesDataModule(str(tree), train_split="trainval", num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16 + 8

    with pytest.raises(Exception, match=r"leftImg8bit/train_extra not found.*gtCoarse_labelIds"):
        CityscapesDataModule(str(tree), coarse=True, num_workers=0)
    # Coarse frames: leftImg8bit/train_extra + gtCoarse/train_extra/*_gtCoarse_labelIds.png
    for image in sorted((tree / "leftImg8bit" / "train").glob("*/*.png"))[:3]:
        city = image.parent.name
        stem = image.name.removesuffix("_leftImg8bit.png")
        (tree / "leftImg8bit" / "train_extra" / city).mkdir(parents=True, exist_ok=True)
        (tree / "gtCoarse" / "train_extra" / city).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tree / "leftImg8bit" / "train_extra" / city / f"x{image.name}")
        label = tree / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png"
        shutil.copy(
            label, tree / "gtCoarse" / "train_extra" / city / f"x{stem}_gtCoarse_labelIds.png"
        )
    dm = CityscapesDataModule(str(tree), coarse=True, num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16 + 3 and len(dm.datasets["val"]) == 8


def test_settings_are_checked(tree):
    with pytest.raises(ConfigError, match=r"label_kind='ids'.*allowed"):
        CityscapesDataModule(str(tree), label_kind="ids")
    with pytest.raises(ConfigError, match=r"split 'training' is unknown.*trainval"):
        CityscapesDataModule(str(tree), train_split="training")


def test_setup_reads_one_file_and_names_a_wrong_kind(tree):
    for label in (tree / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"):
        # Every val label stored as labelIds under the labelTrainIds name.
        shutil.copy(label, label.with_name(label.name.replace("_labelIds", "_labelTrainIds")))
    dm = CityscapesDataModule(str(tree), crop_size=None, num_workers=0)
    with pytest.raises(DataError, match=r"_labelTrainIds\.png holds Cityscapes labelIds"):
        dm.setup("validate")
