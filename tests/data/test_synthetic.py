import json
import re

import numpy as np
import pytest
from PIL import Image

from aspp_seg.data.datasets.cityscapes import VALID_LABEL_IDS, to_train_ids
from aspp_seg.data.datasets.demo import generate_demo_cityscapes
from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.evaluation.metrics import scores

NAME = re.compile(r"^([a-z]+)_(\d{6})_(\d{6})_leftImg8bit\.png$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return generate_demo_cityscapes(root, num_train=60, num_val=20, height=128, width=256)


def _pairs(root, split):
    for image in sorted((root / "leftImg8bit" / split).glob("*/*.png")):
        city, seq, frame = NAME.match(image.name).groups()
        label = root / "gtFine" / split / city / f"{city}_{seq}_{frame}_gtFine_labelIds.png"
        yield np.asarray(Image.open(image)), np.asarray(Image.open(label))


def test_exact_cityscapes_layout_and_label_ids(demo):
    images = list((demo / "leftImg8bit" / "train").glob("*/*"))
    assert len(images) == 60
    for image in images:
        match = NAME.match(image.name)
        assert match and match.group(1) == image.parent.name
        stem = image.name.removesuffix("_leftImg8bit.png")
        gt = demo / "gtFine" / "train" / image.parent.name
        assert (gt / f"{stem}_gtFine_labelIds.png").is_file()
        polygons = json.loads((gt / f"{stem}_gtFine_polygons.json").read_text())
        assert polygons["imgWidth"] == 256 and polygons["imgHeight"] == 128
    for image, label in _pairs(demo, "val"):
        assert image.shape == (128, 256, 3) and image.dtype == np.uint8
        assert label.shape == (128, 256) and label.dtype == np.uint8
        assert set(np.unique(label)) <= VALID_LABEL_IDS


def test_street_classes_all_appear(demo):
    seen = set()
    for _, label in _pairs(demo, "train"):
        seen |= set(np.unique(to_train_ids(label)).tolist())
    # road, sidewalk, building, pole, sign, vegetation, sky, person, car (+ void)
    assert {0, 1, 2, 5, 7, 8, 10, 11, 13} <= seen


def test_same_seed_same_data(tmp_path):
    a = generate_demo_cityscapes(tmp_path / "a", num_train=2, num_val=0, height=32, width=64)
    b = generate_demo_cityscapes(tmp_path / "b", num_train=2, num_val=0, height=32, width=64)
    for (ia, la), (ib, lb) in zip(_pairs(a, "train"), _pairs(b, "train"), strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)


def test_colour_alone_does_not_give_the_answer(demo):
    """A per-pixel nearest-mean-colour classifier, fit on train, scores <= 0.40 mIoU."""
    sums, counts = np.zeros((19, 3)), np.zeros(19)
    for image, label in _pairs(demo, "train"):
        train_ids = to_train_ids(label).ravel()
        valid = train_ids != IGNORE_INDEX
        np.add.at(sums, train_ids[valid], image.reshape(-1, 3)[valid])
        counts += np.bincount(train_ids[valid], minlength=19)
    present = np.flatnonzero(counts)
    means = sums[present] / counts[present, None]
    confusion = np.zeros((19, 19), np.int64)
    for image, label in _pairs(demo, "val"):
        truth = to_train_ids(label).ravel()
        dist = ((image.reshape(-1, 1, 3).astype(float) - means[None]) ** 2).sum(-1)
        pred = present[dist.argmin(1)]
        valid = truth != IGNORE_INDEX
        np.add.at(confusion, (truth[valid], pred[valid]), 1)
    miou = scores(confusion)["miou"]
    print(f"nearest-mean-colour mIoU: {miou:.3f}")
    assert miou <= 0.40
