"""Validation and test score at the label file's own size: only images are resized."""

from __future__ import annotations

import torch

from aspp_seg.data import DemoDataModule
from aspp_seg.data.cache import build_cache
from aspp_seg.data.dataset import collate_eval
from aspp_seg.data.datasets.cityscapes import find_samples


def test_eval_items_keep_the_label_size_training_items_resize(tiny_cityscapes):
    dm = DemoDataModule(str(tiny_cityscapes), image_size=(32, 48), num_workers=0)
    dm.setup("fit")
    val = dm.datasets["val"][0]
    assert val["image"].shape == (3, 32, 48)
    assert val["mask"].shape == (64, 128) and val["mask"].dtype == torch.uint8
    assert val["label_size"].tolist() == [64, 128] and val["label_size"].dtype == torch.int64
    train = dm.datasets["train"][0]
    assert train["image"].shape == (3, 32, 48) and train["mask"].shape == (32, 48)
    assert "label_size" not in train
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 48) and batch["mask"].shape == (8, 64, 128)
    assert batch["label_size"].shape == (8, 2) and batch["label_size"].dtype == torch.int64
    assert (batch["label_size"] == torch.tensor([64, 128])).all()
    assert "label_size" not in next(iter(dm.train_dataloader()))


def test_decoded_cache_also_keeps_the_label_size(tiny_cityscapes, tmp_path):
    build_cache(find_samples(tiny_cityscapes, "val"), tmp_path / "cache" / "val", progress=False)
    dm = DemoDataModule(
        str(tiny_cityscapes), image_size=(32, 48), num_workers=0, cache_dir=str(tmp_path / "cache")
    )
    dm.setup("validate")
    item = dm.datasets["val"][1]
    assert type(dm.datasets["val"]).__name__ == "CachedSegmentationDataset"
    assert item["image"].shape == (3, 32, 48) and item["mask"].shape == (64, 128)
    assert item["label_size"].tolist() == [64, 128]


def test_labels_of_different_sizes_collate_padded_with_ignore():
    items = [
        {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "mask": torch.full((4, 6), 1,
         dtype=torch.uint8), "label_size": torch.tensor([4, 6]), "name": "a"},
        {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "mask": torch.full((5, 3), 2,
         dtype=torch.uint8), "label_size": torch.tensor([5, 3]), "name": "b"},
    ]  # fmt: skip
    batch = collate_eval(items)
    assert batch["image"].shape == (2, 3, 8, 8) and batch["name"] == ["a", "b"]
    assert batch["mask"].shape == (2, 5, 6)
    assert batch["label_size"].tolist() == [[4, 6], [5, 3]]
    assert (batch["mask"][0, :4, :6] == 1).all() and (batch["mask"][0, 4:] == 255).all()
    assert (batch["mask"][1, :5, :3] == 2).all() and (batch["mask"][1, :, 3:] == 255).all()
