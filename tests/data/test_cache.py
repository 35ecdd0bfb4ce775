"""The decoded uint8 cache: same items as decoding PNGs, stale and corrupt caches caught."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from aspp_seg.cli.main import main
from aspp_seg.data.cache import (
    IMAGES,
    CachedSegmentationDataset,
    DecodedCache,
    build_cache,
    cached_dataset,
    verify_cache,
)
from aspp_seg.data.datamodules import DemoDataModule
from aspp_seg.data.dataset import SegmentationDataset, load_sample
from aspp_seg.data.datasets.cityscapes import find_samples
from aspp_seg.data.transforms import eval_transform, train_transform
from aspp_seg.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tiny_cityscapes, tmp_path):
    """A private copy of the tiny tree (tests here modify files)."""
    root = tmp_path / "cs"
    shutil.copytree(tiny_cityscapes, root)
    return root


def test_cache_reads_back_the_decoded_pngs(tiny_cityscapes, tmp_path):
    samples = find_samples(tiny_cityscapes, "val")
    cache = DecodedCache(build_cache(samples, tmp_path / "val", progress=False))
    assert len(cache) == len(samples) == 8
    for i, sample in enumerate(samples):
        image, label = load_sample(sample)
        cached_image, cached_label = cache.read(i)
        assert cached_image.dtype == np.uint8 and cached_image.shape == (64, 128, 3)
        np.testing.assert_array_equal(cached_image, image)
        np.testing.assert_array_equal(cached_label, label)  # already training classes
    assert set(np.unique(cache.read(0)[1])) <= set(range(19)) | {255}
    assert verify_cache(cache, samples, progress=False) == []


def test_cached_dataset_items_equal_the_png_dataset(tiny_cityscapes, tmp_path):
    samples = find_samples(tiny_cityscapes, "val")
    build_cache(samples, tmp_path / "val", progress=False)
    tf = eval_transform()
    cached = cached_dataset(tmp_path, "val", samples, tf)
    plain = SegmentationDataset(samples, tf)
    for i in range(len(plain)):
        a, b = cached[i], plain[i]
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_training_crops_from_the_cache_in_worker_processes(tiny_cityscapes, tmp_path):
    samples = find_samples(tiny_cityscapes, "train")
    build_cache(samples, tmp_path / "train", progress=False)
    tf = train_transform("deeplabv3", crop_size=(32, 48))
    dataset = cached_dataset(tmp_path, "train", samples, tf)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    assert len(batches) == 4
    for batch in batches:
        # 1 byte per value through the workers; the model normalises on its device
        assert batch["image"].shape == (4, 3, 32, 48) and batch["image"].dtype == torch.uint8
        assert batch["mask"].shape == (4, 32, 48) and batch["mask"].dtype == torch.uint8


def test_changed_source_file_makes_the_cache_stale(tree, tmp_path):
    samples = find_samples(tree, "val")
    build_cache(samples, tmp_path / "cache" / "val", progress=False)
    label = samples[3].label
    Image.fromarray(np.full((64, 128), 7, np.uint8)).save(label)  # 7 = road
    os.utime(label, ns=(1, 1))  # a new mtime even on coarse file-system clocks
    with pytest.raises(DataError, match=rf"{label.name} changed.*aspp-seg cache"):
        cached_dataset(tmp_path / "cache", "val", samples, eval_transform())
    with pytest.raises(DataError, match="holds 8 samples, the split has 7"):
        cached_dataset(tmp_path / "cache", "val", samples[:7], eval_transform())


def test_verify_names_the_file_whose_cached_bytes_differ(tiny_cityscapes, tmp_path):
    samples = find_samples(tiny_cityscapes, "val")
    folder = build_cache(samples, tmp_path / "val", progress=False)
    data = np.memmap(folder / IMAGES, dtype=np.uint8, mode="r+")
    second = 64 * 128 * 3 + 5  # a byte of the second image
    data[second] = 255 - data[second]
    data.flush()
    del data
    wrong = verify_cache(DecodedCache(folder), samples, progress=False)
    assert wrong == [f"{samples[1].image}: cached image differs from the PNG"]


def test_missing_cache_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"no decoded cache in .*nothing.*aspp-seg cache"):
        DecodedCache(tmp_path / "nothing")


def test_cache_command_then_datamodule_reads_it(tiny_cityscapes, tmp_path, capsys):
    out = tmp_path / "cache"
    main(["cache", "--config", str(REPO / "configs" / "demo.yaml"),
          "--data.init_args.root", str(tiny_cityscapes), "--out", str(out),
          "--progress", "false"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "train: 16 samples" in printed and "val: 8 samples" in printed
    assert "verified all samples against the PNGs: identical" in printed
    datamodule = DemoDataModule(
        str(tiny_cityscapes), cache_dir=str(out), batch_size=4, num_workers=0
    )
    datamodule.setup("fit")
    assert isinstance(datamodule.datasets["train"], CachedSegmentationDataset)
    assert isinstance(datamodule.datasets["val"], CachedSegmentationDataset)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 128)


def test_cache_command_rejects_unknown_split(tiny_cityscapes, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "--config", str(REPO / "configs" / "demo.yaml"),
              "--data.init_args.root", str(tiny_cityscapes), "--out", str(tmp_path),
              "--splits", "[trian]"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "--splits holds 'trian'; allowed: train, val, test" in capsys.readouterr().err
