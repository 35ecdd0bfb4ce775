"""A decoded cache: images and label maps decoded once into memory-mapped uint8 files.

Decoding a 1024x2048 Cityscapes PNG costs tens of milliseconds; with the cache a data
worker reads raw pixels from the page cache (or a fast disk) and only crops and
augments. Labels are stored already mapped to training classes (255 = ignore), after the
same per-file checks as training's PNG path (`aspp_seg.data.dataset.load_sample`).

Layout of one cached split (``<cache_dir>/<role>/``)::

    images.u8    every image, H x W x 3 RGB bytes, back to back
    labels.u8    every label map, H x W training-class bytes, back to back
    index.json   per sample: name, source files (path, size, mtime), height, width and
                 byte offsets; written last, so a half-built cache is never used

Build with ``aspp-seg cache`` (progress bar, then a check that the bytes read back
equal a fresh decode of the PNGs); use by setting ``data.init_args.cache_dir``. A cache
whose source files changed (other files, sizes or modification times) is refused with
the command that rebuilds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from aspp_seg.data.dataset import Sample, load_sample, make_item
from aspp_seg.errors import DataError

FORMAT_VERSION = 1
IMAGES = "images.u8"
LABELS = "labels.u8"
INDEX = "index.json"


def _source(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _progress(items: Sequence, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", dynamic_ncols=True)


PARTIAL = ".partial"
"""Suffix of the files a build writes before they replace the cache (`stage_cache`)."""
_FILES = (IMAGES, LABELS, INDEX)


def stage_cache(samples: Sequence[Sample], out_dir: str | Path, *, progress: bool = True) -> Path:
    """Decodes `samples` into ``<file>.partial`` files in `out_dir`, beside any cache there
    (which stays readable and unchanged); `commit_cache` puts them in its place.

    Args:
        samples: the files of one split, in the order the data set reads them.
        out_dir: folder for ``images.u8``, ``labels.u8`` and ``index.json``.
        progress: show a progress bar.

    Returns:
        `out_dir`.

    Raises:
        DataError: naming the first unreadable or invalid sample; the partial files are
            removed, the cache in `out_dir` is left as it was.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, image_offset, label_offset = [], 0, 0
    try:
        with open(out / (IMAGES + PARTIAL), "wb") as images, \
                open(out / (LABELS + PARTIAL), "wb") as labels:  # fmt: skip
            for sample in _progress(samples, f"caching {out.name}", progress):
                image, label = load_sample(sample)
                images.write(np.ascontiguousarray(image).tobytes())
                labels.write(np.ascontiguousarray(label).tobytes())
                height, width = label.shape
                entries.append(
                    {
                        "name": sample.image.name,
                        "image": _source(sample.image),
                        "label": _source(sample.label),
                        "encoding": sample.encoding.name,
                        "height": height,
                        "width": width,
                        "image_offset": image_offset,
                        "label_offset": label_offset,
                    }
                )
                image_offset += image.nbytes
                label_offset += label.nbytes
        index = {"version": FORMAT_VERSION, "samples": entries}
        (out / (INDEX + PARTIAL)).write_text(json.dumps(index))
    except BaseException:
        discard_staged(out)
        raise
    return out


def commit_cache(out_dir: str | Path) -> Path:
    """Replaces the cache in `out_dir` by the files `stage_cache` wrote there.

    The index goes first and comes back last, so a reader never pairs an index with
    byte files of another build; readers that mapped the old files keep reading them.
    """
    out = Path(out_dir)
    (out / INDEX).unlink(missing_ok=True)
    for name in _FILES:
        os.replace(out / (name + PARTIAL), out / name)
    return out


def discard_staged(out_dir: str | Path) -> None:
    """Removes the partial files of a build that did not finish."""
    for name in _FILES:
        (Path(out_dir) / (name + PARTIAL)).unlink(missing_ok=True)


def build_cache(samples: Sequence[Sample], out_dir: str | Path, *, progress: bool = True) -> Path:
    """Decodes `samples` into a cache folder: `stage_cache`, then `commit_cache`.

    A cache already in `out_dir` is replaced only when every sample decoded; on an
    error it is left as it was.

    Returns:
        `out_dir`.

    Raises:
        DataError: naming the first unreadable or invalid sample.
    """
    return commit_cache(stage_cache(samples, out_dir, progress=progress))


class DecodedCache:
    """Read access to a cache folder written by `build_cache`.

    The two byte files are memory-mapped on first access in each process (a DataLoader
    worker maps its own; nothing large is pickled), so images come straight from the
    operating system's page cache.

    Raises:
        DataError: when the folder holds no complete cache.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir)
        index_path = self.root / INDEX
        if not index_path.is_file():
            raise DataError(
                f"no decoded cache in {self.root} (missing {INDEX}); build it with "
                "`aspp-seg cache --config <your config> --out <cache dir>`"
            )
        index = json.loads(index_path.read_text())
        if index.get("version") != FORMAT_VERSION:
            raise DataError(
                f"decoded cache {self.root} has format {index.get('version')}, this "
                f"aspp-seg reads {FORMAT_VERSION}; rebuild it with `aspp-seg cache`"
            )
        self.entries: list[dict] = index["samples"]
        self._maps: tuple[np.memmap, np.memmap] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None, "_pid": None}  # workers map their own

    def _mapped(self) -> tuple[np.memmap, np.memmap]:
        if self._maps is None or self._pid != os.getpid():
            self._maps = (
                np.memmap(self.root / IMAGES, dtype=np.uint8, mode="r"),
                np.memmap(self.root / LABELS, dtype=np.uint8, mode="r"),
            )
            self._pid = os.getpid()
        return self._maps

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H x W x 3 uint8 RGB, H x W uint8 training classes), read-only views."""
        entry = self.entries[index]
        images, labels = self._mapped()
        h, w = entry["height"], entry["width"]
        start, lstart = entry["image_offset"], entry["label_offset"]
        image = images[start : start + h * w * 3].reshape(h, w, 3)
        label = labels[lstart : lstart + h * w].reshape(h, w)
        return image, label

    def stale(self, samples: Sequence[Sample]) -> str | None:
        """None when the cache holds exactly `samples` as they are now, else why not."""
        if len(samples) != len(self.entries):
            return f"it holds {len(self.entries)} samples, the split has {len(samples)}"
        for sample, entry in zip(samples, self.entries, strict=True):
            for path, cached in ((sample.image, entry["image"]), (sample.label, entry["label"])):
                if str(path) != cached["path"]:
                    return f"it holds {cached['path']} where the split has {path}"
                now = _source(path)
                if (now["size"], now["mtime_ns"]) != (cached["size"], cached["mtime_ns"]):
                    return f"{path} changed after the cache was built"
            if sample.encoding.name != entry["encoding"]:
                return (
                    f"{sample.label} is read as {sample.encoding.name}, "
                    f"cached as {entry['encoding']}"
                )
        return None

    def check(self, samples: Sequence[Sample]) -> None:
        """Raises DataError naming the cache and what differs when it is stale."""
        reason = self.stale(samples)
        if reason is not None:
            raise DataError(
                f"decoded cache {self.root} does not match the data set ({reason}); "
                "rebuild it with `aspp-seg cache`, or unset data.init_args.cache_dir"
            )


def verify_cache(
    cache: DecodedCache,
    samples: Sequence[Sample],
    *,
    every: int = 1,
    progress: bool = True,
) -> list[str]:
    """Compares cached bytes with a fresh decode of the PNGs.

    Args:
        cache: the cache to check.
        samples: the files it was built from, in order.
        every: check every n-th sample (1: all).
        progress: show a progress bar.

    Returns:
        One line per sample whose cached image or label differs (empty: all equal).
    """
    cache.check(samples)
    wrong = []
    picked = list(range(0, len(samples), max(1, every)))
    for i in _progress(picked, f"verifying {cache.root.name}", progress):
        image, label = load_sample(samples[i])
        cached_image, cached_label = cache.read(i)
        if not np.array_equal(image, cached_image):
            wrong.append(f"{samples[i].image}: cached image differs from the PNG")
        if not np.array_equal(label, cached_label):
            wrong.append(f"{samples[i].label}: cached label differs from the PNG")
    return wrong


class CachedSegmentationDataset(Dataset):
    """`SegmentationDataset` over a decoded cache: workers only crop and augment.

    Args:
        cache: an open `DecodedCache`.
        transform: called as ``transform(image=H x W x 3 uint8, mask=H x W uint8)``.
        label_at_file_size: evaluation: the mask skips `transform` and keeps the
            file's size (see `aspp_seg.data.dataset.make_item`).

    Items: equal to those of `SegmentationDataset` on the same files.
    """

    def __init__(
        self,
        cache: DecodedCache,
        transform: Callable[..., dict],
        *,
        label_at_file_size: bool = False,
    ) -> None:
        self.cache = cache
        self.transform = transform
        self.label_at_file_size = label_at_file_size

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.cache.read(index)
        return make_item(
            image,
            mask,
            self.cache.entries[index]["name"],
            self.transform,
            label_at_file_size=self.label_at_file_size,
        )


def cached_dataset(
    cache_dir: str | Path,
    role: str,
    samples: Sequence[Sample],
    transform: Callable[..., dict],
    *,
    label_at_file_size: bool = False,
) -> CachedSegmentationDataset:
    """The cached data set of `role` (``train``, ``val``, ``test``), checked against `samples`."""
    cache = DecodedCache(Path(cache_dir) / role)
    cache.check(samples)
    return CachedSegmentationDataset(cache, transform, label_at_file_size=label_at_file_size)
