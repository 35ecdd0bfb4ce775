"""Unlabelled images for ``aspp-seg predict``: a source (file, folder or glob), a data
set reading it with the evaluation transform, and batches of equal-sized images.

`SizeBatchSampler` batches images of one size together, so a folder of mixed sizes
needs no padding. The writer of the results is `aspp_seg.training.callbacks.PredictionWriter`.
"""

from __future__ import annotations

import glob
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from aspp_seg.data.io import IMAGE_EXTENSIONS, read_rgb
from aspp_seg.data.parallel import ignore_ctrl_c
from aspp_seg.errors import DataError


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def image_source(source: str | Path) -> list[tuple[Path, str]]:
    """The images of a file, a folder (searched recursively) or a glob pattern.

    Returns:
        (path, name) per image, sorted; the name is the path relative to the folder or
        to the glob's fixed leading part, used for the output files (`output_names`).

    Raises:
        DataError: naming the source when it holds no image.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        if not _is_image(path):
            raise DataError(
                f"predict source {path} is not an image ({', '.join(IMAGE_EXTENSIONS)})"
            )
        return [(path, path.name)]
    if path.is_dir():
        base, found = path, sorted(p for p in path.rglob("*") if _is_image(p))
    elif glob.has_magic(text):
        parts = Path(text).expanduser().parts
        leading = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
        base = Path(*parts[:leading]) if leading else Path(".")
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        found = [p for p in found if _is_image(p)]
    else:
        raise DataError(f"predict source {text} is neither a file, a folder nor a glob pattern")
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in predict source {text}")
    names = [p.relative_to(base).as_posix() if p.is_relative_to(base) else p.name for p in found]
    return list(zip(found, output_names(names), strict=True))


def output_names(names: Sequence[str]) -> list[str]:
    """The names whose extension the prediction writer replaces with ``.png``, made
    distinct: two images that would share an output (``frame.png`` and ``frame.jpg``)
    keep their own file names before it, except one already named ``.png``
    (``frame.png`` -> ``frame.png``, ``frame.jpg`` -> ``frame.jpg.png``). Names are
    compared ignoring case, as some file systems do.

    Raises:
        DataError: naming two images whose outputs would still coincide.
    """

    def output(name: str) -> str:
        return Path(name).with_suffix(".png").as_posix().casefold()

    shared = Counter(output(name) for name in names)
    distinct = [
        name if shared[output(name)] == 1 or name.endswith(".png") else f"{name}.png"
        for name in names
    ]
    first: dict[str, str] = {}
    for name, given in zip(distinct, names, strict=True):
        other = first.setdefault(output(name), given)
        if other != given:
            raise DataError(
                f"images {other} and {given} of the predict source would write the same "
                f"output files ({Path(name).with_suffix('.png')}); rename one of them"
            )
    return distinct


class ImageSource(Dataset):
    """Images without labels, for prediction.

    Args:
        source: a file, a folder or a glob pattern (see `image_source`).
        transform: albumentations pipeline ending in ToTensorV2 (the evaluation one).

    Items: ``{"image": 3 x h x w uint8, "name": str, "path": str, "size": int64[2]
    (the file's H, W)}``.
    """

    def __init__(self, source: str | Path, transform: Callable[..., dict]) -> None:
        self.files = image_source(source)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) read from the file header only.

        Raises:
            DataError: naming a file whose header is not an image's (every file's is
                read here, in the main process, before the first batch).
        """
        path = self.files[index][0]
        try:
            with Image.open(path) as image:
                return image.height, image.width
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            reason = "not an image" if isinstance(error, UnidentifiedImageError) else error
            raise DataError(f"cannot read image {path} in the predict source: {reason}") from None

    def __getitem__(self, index: int) -> dict:
        path, name = self.files[index]
        image = read_rgb(path)
        return {
            "image": self.transform(image=image)["image"],
            "name": name,
            "path": str(path),
            "size": torch.tensor(image.shape[:2]),
        }


class SizeBatchSampler(BatchSampler):
    """Batches of up to `batch_size` indices whose images share one size.

    Indices come from `sampler` in its order; a batch is given out when its size group
    is full, the incomplete ones at the end. Lightning re-creates it around a
    DistributedSampler under DDP (hence the `BatchSampler` signature).

    Args:
        sampler: the indices to batch (e.g. a SequentialSampler).
        batch_size: items per batch.
        drop_last: drop the incomplete batch of each size group.
        sizes: (height, width) of every item of the data set.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        sizes: Sequence[tuple[int, int]],
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.sizes = [tuple(size) for size in sizes]

    def __iter__(self) -> Iterator[list[int]]:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index in self.sampler:
            group = groups[self.sizes[index]]
            group.append(index)
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()
        if not self.drop_last:
            yield from (group for group in groups.values() if group)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def predict_loader(
    source: str | Path, transform: Callable[..., dict], *, batch_size: int = 1, num_workers: int = 0
) -> DataLoader:
    """A DataLoader over `source`, batching equal-sized images together."""
    dataset = ImageSource(source, transform)
    sizes = [dataset.image_size(i) for i in range(len(dataset))]
    return DataLoader(
        dataset,
        batch_sampler=SizeBatchSampler(SequentialSampler(dataset), batch_size, sizes=sizes),
        num_workers=num_workers,
        persistent_workers=False,
        worker_init_fn=ignore_ctrl_c,
    )
