import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels, trainId2label

from aspp_seg.data.datasets.cityscapes import (
    CLASSES,
    COLUMNS,
    LABEL_ID_TO_TRAIN_ID,
    TRAIN_ID_TO_LABEL_ID,
    to_train_ids,
)
from aspp_seg.data.labels import IGNORE_INDEX


def test_every_label_id_maps_like_cityscapesscripts():
    for label in labels:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
        assert LABEL_ID_TO_TRAIN_ID[label.id] == expected, label.name


def test_unknown_label_ids_are_ignored():
    known = {label.id for label in labels}
    for value in range(256):
        if value not in known:
            assert LABEL_ID_TO_TRAIN_ID[value] == IGNORE_INDEX


def test_nineteen_classes_in_train_id_order():
    assert len(CLASSES) == 19 == len(COLUMNS)
    for train_id, name in enumerate(CLASSES):
        assert trainId2label[train_id].name == name


def test_train_id_round_trip():
    train_ids = np.arange(19, dtype=np.uint8)
    label_ids = TRAIN_ID_TO_LABEL_ID[train_ids]
    assert [id2label[i].trainId for i in label_ids] == list(range(19))
    np.testing.assert_array_equal(to_train_ids(label_ids), train_ids)
