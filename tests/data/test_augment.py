"""Augmentation presets: image and label stay aligned, padding is ignored, the
class-balanced crop re-draws, data workers draw different augmentations, and the
on-device normalisation equals albumentations' Normalize."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from aspp_seg.data.datamodules import _seed_worker
from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.data.transforms import (
    RandomScaleCrop,
    eval_transform,
    normalize_images,
    train_transform,
)
from aspp_seg.errors import ConfigError

PALETTE = np.array(
    [[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230], [230, 20, 230]],
    dtype=np.uint8,
)


def _painted(seed: int = 0, height: int = 120, width: int = 200):
    """A label of 20x20 blocks of random classes, and the image painted from it."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(PALETTE), size=(height // 20 + 1, width // 20 + 1))
    label = np.kron(blocks, np.ones((20, 20), dtype=np.int64))[:height, :width].astype(np.uint8)
    return PALETTE[label], label


def _nearest_class(image: np.ndarray) -> np.ndarray:
    dist = ((image[..., None, :].astype(int) - PALETTE[None, None].astype(int)) ** 2).sum(-1)
    return dist.argmin(-1)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds one value."""
    padded = np.pad(mask, 1, mode="edge")
    same = np.ones(mask.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            same &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == mask
    return same


def _apply(tf, image, label):
    out = tf(image=image, mask=label)
    return out["image"].permute(1, 2, 0).numpy(), np.asarray(out["mask"])


@pytest.mark.parametrize("seed", range(6))
def test_deeplabv3_keeps_image_and_label_aligned(seed):
    image, label = _painted(seed)
    tf = train_transform("deeplabv3", crop_size=(96, 160), color=False, normalize=False)
    tf.set_random_seed(seed)
    for _ in range(5):
        img, mask = _apply(tf, image, label)
        assert img.shape == (96, 160, 3) and mask.shape == (96, 160)
        labelled = mask != IGNORE_INDEX
        # Scaled with bilinear (image) and nearest (label): only block edges may blend;
        # inside the blocks (3x3 neighbourhood of one class) they agree exactly.
        agree = _nearest_class(img) == mask
        assert agree[_interior(mask) & labelled].all()
        assert agree[labelled].mean() > 0.9
        # Padding: black image, ignored label, and nowhere else.
        black = (img == 0).all(-1)
        np.testing.assert_array_equal(black, ~labelled)


def test_without_scaling_alignment_is_exact():
    image, label = _painted(1)
    tf = train_transform(
        "deeplabv3", crop_size=(150, 150), scale_range=(1.0, 1.0), color=False, normalize=False
    )
    for _ in range(10):
        img, mask = _apply(tf, image, label)
        labelled = mask != IGNORE_INDEX
        np.testing.assert_array_equal(img[labelled], PALETTE[mask[labelled]])
        assert labelled.sum() == 120 * 150  # 150 high crop of a 120 high image: 30 rows pad


def test_photometric_changes_the_image_not_the_label():
    image, label = _painted(2)
    tf = train_transform(
        "deeplabv3", crop_size=(120, 200), scale_range=(1.0, 1.0), flip=False, normalize=False
    )
    tf.set_random_seed(0)  # unseeded, about 1 run in 1000 changed fewer than 10 of 20
    changed = 0
    for _ in range(20):
        img, mask = _apply(tf, image, label)
        np.testing.assert_array_equal(mask, label)
        changed += not np.array_equal(img, image)
    assert changed >= 10


def test_flip_mirrors_both():
    image, label = _painted(3)
    tf = train_transform(
        "deeplabv3", crop_size=(120, 200), scale_range=(1.0, 1.0), color=False, normalize=False
    )
    flips = 0
    for _ in range(20):
        img, mask = _apply(tf, image, label)
        flipped = np.array_equal(mask, label[:, ::-1])
        assert flipped or np.array_equal(mask, label)
        np.testing.assert_array_equal(img, PALETTE[mask])
        flips += flipped
    assert 3 <= flips <= 17


def test_class_balanced_crop_redraws_crops_dominated_by_one_class():
    label = np.zeros((200, 200), np.uint8)
    label[:70, :70] = 1  # one small object in a sea of class 0
    image = PALETTE[label]

    def share_of_balanced(ratio):
        crop = RandomScaleCrop((64, 64), scale_range=(1.0, 1.0), cat_max_ratio=ratio)
        crop.set_random_seed(0)
        good = 0
        for _ in range(100):
            mask = crop(image=image, mask=label)["mask"]
            good += np.bincount(mask.ravel(), minlength=2).max() / mask.size <= 0.75
        return good / 100

    plain, balanced = share_of_balanced(1.0), share_of_balanced(0.75)
    assert plain < 0.25 and balanced > plain + 0.3, (plain, balanced)


def test_preset_errors_name_the_setting():
    with pytest.raises(ConfigError, match=r"data.augment='flip'.*allowed: \('none', 'deeplabv3'\)"):
        train_transform("flip")
    with pytest.raises(ConfigError, match=r"needs data\.crop_size"):
        train_transform("deeplabv3")
    with pytest.raises(ConfigError, match="cat_max_ratio"):
        train_transform("deeplabv3", crop_size=(8, 8), cat_max_ratio=0.0)


class _Same(Dataset):
    """The same painted frame four times, augmented."""

    def __init__(self):
        self.image, self.label = _painted(4)
        self.transform = train_transform("deeplabv3", crop_size=(64, 64), normalize=False)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.as_tensor(self.transform(image=self.image, mask=self.label)["mask"])


def test_workers_draw_different_augmentations():
    loader = DataLoader(
        _Same(),
        batch_size=1,
        num_workers=2,
        worker_init_fn=functools.partial(_seed_worker, rank=0),
    )
    first, second = [b[0] for b in loader][:2]  # item 0 from worker 0, item 1 from worker 1
    assert not torch.equal(first, second)


def test_study_preset_crop_is_an_exact_slice_padded_with_ignore():
    """Without scaling the crop is a plain slice (no resampling), padded where it overhangs."""
    h, w = 40, 70
    codes = np.arange(h * w, dtype=np.int64).reshape(h, w)
    image = np.stack([codes % 256, codes // 256, np.zeros_like(codes)], -1).astype(np.uint8)
    mask = (codes % 19).astype(np.uint8)
    tf = train_transform("none", crop_size=(32, 80), normalize=False)
    for _ in range(5):
        out = tf(image=image, mask=mask)
        img = np.asarray(out["image"]).transpose(1, 2, 0)
        lbl = np.asarray(out["mask"])
        first = int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])
        y0, x0 = divmod(first, w)
        assert x0 == 0  # the crop is wider than the image: no horizontal offset
        np.testing.assert_array_equal(img[:, :w], image[y0 : y0 + 32])
        np.testing.assert_array_equal(lbl[:, :w], mask[y0 : y0 + 32])
        assert (lbl[:, w:] == 255).all() and (img[:, w:] == 0).all()


def test_device_normalisation_equals_albumentations_normalize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    mask = rng.integers(0, 19, (40, 70), dtype=np.uint8)
    reference = eval_transform(normalize=True)(image=image, mask=mask)["image"]
    raw = eval_transform()(image=image, mask=mask)["image"]
    assert raw.dtype == torch.uint8 and reference.dtype == torch.float32
    ours = normalize_images(raw[None])[0]
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    nhwc = normalize_images(raw[None].contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc[0], reference, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        normalize_images(reference)
