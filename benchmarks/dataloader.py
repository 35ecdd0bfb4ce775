"""Images per second of the training data pipeline at Cityscapes size (1024x2048).

Measures, in one run and on the same files:

1. PNG decoders (PIL, OpenCV, torchvision.io.decode_png): ms per 1024x2048 frame;
   aspp-seg reads with the fastest (`aspp_seg.data.io`).
2. Training pipelines (decode + labelId->trainId mapping + DeepLabv3 augmentation:
   scale 0.5-2.0, 512x1024 crop, flip, photometric), each in one process and through
   a DataLoader with N workers:
   - ``naive``: PIL + numpy as many segmentation repos write it (per-class mapping
     loop, whole-image resize, then crop, normalise in the worker: a float32 image and
     an int64 mask per item);
   - ``aspp-seg``: the `SegmentationDataset` training uses (OpenCV decode, lookup-table
     mapping with the per-file label check, fused scale+crop that resizes only the
     crop window, albumentations). Items stay uint8 (image and mask): the model
     normalises on its device (the network's ``pixel_mean`` / ``pixel_std``), so that
     step is not in these figures, and each item crosses from a worker in 2 MiB
     instead of 10 MiB.
   The ratio aspp-seg / naive is the figure; add a variant by adding an entry to
   `PIPELINES` (a function: samples, crop size -> map-style Dataset).
   - ``aspp-seg cached``: the same, reading the decoded uint8 cache of ``aspp-seg
     cache`` (`aspp_seg.data.cache`) instead of PNGs; ``crop-only`` and ``crop-only
     cached``: the study's protocol (random crop, no augmentation) from PNGs and from
     the cache. Cached / PNG ratios are printed for both.

    python benchmarks/dataloader.py                      # synthetic 1024x2048 frames
    python benchmarks/dataloader.py --root /data/cityscapes --workers 8

A GPU that trains on ~70 crops/s (an H100 estimate: 60-85) needs
ceil(70 / per-worker images/s) workers.
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from jsonargparse import CLI
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aspp_seg.data.cache import CachedSegmentationDataset, DecodedCache, build_cache
from aspp_seg.data.dataset import Sample, SegmentationDataset
from aspp_seg.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID, find_samples
from aspp_seg.data.datasets.demo import generate_demo_cityscapes
from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.data.transforms import train_transform
from aspp_seg.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

# --- decoders ---


def _decode_pil(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _decode_cv2(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _decode_torchvision(path: Path) -> np.ndarray:
    from torchvision.io import ImageReadMode, decode_png, read_file

    return decode_png(read_file(str(path)), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()


DECODERS: dict[str, Callable[[Path], np.ndarray]] = {
    "PIL": _decode_pil,
    "OpenCV": _decode_cv2,
    "torchvision.io.decode_png": _decode_torchvision,
}


# --- pipelines ---


class NaiveDataset(Dataset):
    """PIL + numpy, the common way: the same work as aspp-seg's, done plainly."""

    def __init__(self, samples: list[Sample], crop_size: tuple[int, int]) -> None:
        self.samples = samples
        self.crop = crop_size
        self.rng = np.random.default_rng(0)
        self.mapping = [(i, int(t)) for i, t in enumerate(LABEL_ID_TO_TRAIN_ID[:34])]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = Image.open(sample.image).convert("RGB")
        label_ids = np.array(Image.open(sample.label))
        label = np.full_like(label_ids, IGNORE_INDEX)
        for label_id, train_id in self.mapping:  # one pass over the frame per class
            label[label_ids == label_id] = train_id
        scale = self.rng.uniform(0.5, 2.0)
        size = (round(image.width * scale), round(image.height * scale))
        image = np.array(image.resize(size, Image.BILINEAR))
        label = np.array(Image.fromarray(label).resize(size, Image.NEAREST))
        ch, cw = self.crop
        pad_h, pad_w = max(ch - image.shape[0], 0), max(cw - image.shape[1], 0)
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        y = self.rng.integers(0, image.shape[0] - ch + 1)
        x = self.rng.integers(0, image.shape[1] - cw + 1)
        image, label = image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]
        if self.rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        image = image.astype(np.float32)
        if self.rng.random() < 0.5:  # brightness / contrast
            image = (image - 128) * self.rng.uniform(0.5, 1.5) + 128 + self.rng.uniform(-32, 32)
        image = (np.clip(image, 0, 255) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),
            "mask": torch.from_numpy(label.astype(np.int64)),
        }


def naive(samples: list[Sample], crop_size: tuple[int, int]) -> Dataset:
    return NaiveDataset(samples, crop_size)


def aspp_seg(samples: list[Sample], crop_size: tuple[int, int]) -> Dataset:
    return SegmentationDataset(samples, train_transform("deeplabv3", crop_size=crop_size))


def _decoded_cache(samples: list[Sample]) -> DecodedCache:
    """The samples decoded once into a memory-mapped cache (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="aspp-seg-cache-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return DecodedCache(build_cache(samples, folder / "train", progress=False))


def aspp_seg_cached(samples: list[Sample], crop_size: tuple[int, int]) -> Dataset:
    """``aspp-seg`` reading the decoded cache (`aspp-seg cache`): no PNG decoding."""
    transform = train_transform("deeplabv3", crop_size=crop_size)
    return CachedSegmentationDataset(_decoded_cache(samples), transform)


def crop_only(samples: list[Sample], crop_size: tuple[int, int]) -> Dataset:
    """The study's protocol (augment: none): decode, random crop."""
    return SegmentationDataset(samples, train_transform("none", crop_size=crop_size))


def crop_only_cached(samples: list[Sample], crop_size: tuple[int, int]) -> Dataset:
    """The study's protocol from the decoded cache: workers only crop."""
    transform = train_transform("none", crop_size=crop_size)
    return CachedSegmentationDataset(_decoded_cache(samples), transform)


PIPELINES: dict[str, Callable[[list[Sample], tuple[int, int]], Dataset]] = {
    "naive": naive,
    "aspp-seg": aspp_seg,
    "aspp-seg cached": aspp_seg_cached,
    "crop-only": crop_only,
    "crop-only cached": crop_only_cached,
}
# (cached pipeline, the same pipeline decoding PNGs): printed as a ratio.
CACHE_PAIRS = (("aspp-seg cached", "aspp-seg"), ("crop-only cached", "crop-only"))


# --- measurement ---


def _per_process(dataset: Dataset, count: int) -> float:
    """Images/s reading `count` items in this process (after one warm-up item)."""
    dataset[0]
    start = time.perf_counter()
    for i in range(count):
        dataset[i % len(dataset)]
    return count / (time.perf_counter() - start)


def _with_workers(dataset: Dataset, count: int, workers: int) -> float:
    """Images/s through a DataLoader with `workers` processes (after their start-up)."""
    loader = DataLoader(
        dataset,
        batch_size=1,
        num_workers=workers,
        sampler=[i % len(dataset) for i in range(count + 2 * workers)],
        persistent_workers=False,
        prefetch_factor=2,
    )
    iterator = iter(loader)
    for _ in range(workers):  # every worker has started and delivered once
        next(iterator)
    start = time.perf_counter()
    n = 0
    for _ in iterator:
        n += 1
    return n / (time.perf_counter() - start)


def _frames(root: str | None, frames: int, workdir: Path) -> list[Sample]:
    if root is not None:
        return find_samples(root, "train")[:frames]
    print(f"writing {frames} synthetic 1024x2048 frames (Cityscapes layout) to {workdir} ...")
    generate_demo_cityscapes(workdir, num_train=frames, num_val=0, height=1024, width=2048)
    return find_samples(workdir, "train")


def main(
    root: str | None = None,
    frames: int = 6,
    samples: int = 12,
    workers: int = 2,
    crop_size: tuple[int, int] = (512, 1024),
    pipelines: list[str] | None = None,
    gpu_crops_per_s: float = 70.0,
) -> None:
    """Prints decoder times and pipeline images/s.

    Args:
        root: a Cityscapes root to read train frames from; None writes synthetic ones.
        frames: distinct frames to cycle over.
        samples: items measured per pipeline and setting.
        workers: DataLoader workers for the multi-process figure.
        crop_size: (height, width) of the training crop.
        pipelines: names from `PIPELINES` (default: all).
        gpu_crops_per_s: what the GPU consumes, for the workers-per-GPU estimate.
    """
    torch.set_num_threads(1)
    names = pipelines or list(PIPELINES)
    with tempfile.TemporaryDirectory() as tmp:
        files = _frames(root, frames, Path(tmp))
        size = _decode_cv2(files[0].image).shape
        mb = np.mean([f.image.stat().st_size for f in files]) / 2**20
        print(f"{len(files)} frames of {size[1]}x{size[0]}, PNG {mb:.1f} MB each")

        print(f"\ndecoder ({size[1]}x{size[0]} RGB PNG)   ms/frame (best of 3 interleaved rounds)")
        times = dict.fromkeys(DECODERS, math.inf)
        for _ in range(3):  # interleaved, best round: robust to other load on the machine
            for name, decode in DECODERS.items():
                decode(files[0].image)
                start = time.perf_counter()
                for f in files:
                    decode(f.image)
                elapsed = 1000 * (time.perf_counter() - start) / len(files)
                times[name] = min(times[name], elapsed)
        for name, ms in times.items():
            print(f"  {name:<28}{ms:8.1f}")
        print(f"  fastest: {min(times, key=times.get)}")

        print(f"\npipeline      1 process img/s   {workers} workers img/s")
        results = {}
        for name in names:
            dataset = PIPELINES[name](files, tuple(crop_size))
            one = _per_process(dataset, samples)
            many = _with_workers(dataset, samples, workers)
            results[name] = (one, many)
            print(f"  {name:<12}{one:14.2f}{many:20.2f}")
        if "naive" in results:
            for name, (one, many) in results.items():
                if name != "naive":
                    base_one, base_many = results["naive"]
                    print(
                        f"  ratio {name} / naive: {one / base_one:.2f}x (1 process), "
                        f"{many / base_many:.2f}x ({workers} workers)"
                    )
        for cached, png in CACHE_PAIRS:
            if cached in results and png in results:
                (c_one, c_many), (p_one, p_many) = results[cached], results[png]
                print(
                    f"  ratio {cached} / {png}: {c_one / p_one:.2f}x (1 process), "
                    f"{c_many / p_many:.2f}x ({workers} workers)"
                )
        best = max(one for one, _ in results.values())
        print(
            f"\na GPU at {gpu_crops_per_s:.0f} crops/s needs "
            f"{math.ceil(gpu_crops_per_s / best)} workers at {best:.1f} img/s per worker"
        )


if __name__ == "__main__":
    CLI(main, as_positional=False)
