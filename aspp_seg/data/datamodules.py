"""The LightningDataModules: `SegmentationDataModule`, what every one shares, and the data
modules of this package's data sets (`CityscapesDataModule`, `CamVidDataModule`,
`FolderDataModule`, `DemoDataModule`).

Each data set has two halves. Its file in `aspp_seg.data.datasets` says what the files
hold (classes, palette, label encodings, scan, ``aspp-seg evaluate`` formats) in plain
Python and numpy, so that ``evaluate`` reads it without torch or Lightning; its data
module, here, is what fit, validate, test, predict, ``check-data`` and ``cache`` build
from a config's ``data.class_path`` (``aspp_seg.data.CamVidDataModule``: the package
imports this module when a config or test first asks for a data module).

The base's constructor holds the loader and augmentation settings (written once;
subclasses take them as ``**kwargs``, which LightningCLI resolves from this signature, so
every one is settable in YAML and shown by ``--print_config``), checks them, and checks
the layout in ``__init__`` (before any model is built). A data set adds one thing:
`scan`, which pairs images with labels and names their `LabelEncoding`. Also shared: the
cheap per-file checks on every read, augmentation presets from
`aspp_seg.data.transforms`, and evaluation loaders that score at each label file's own
size and count every image once under DDP (`UnpaddedDistributedSampler`).

A new data set, e.g. in ``my_data.py``::

    class MyDataModule(SegmentationDataModule):
        class_names = ("background", "thing")
        palette = ((0, 0, 0), (255, 0, 0))

        def __init__(self, root: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self.root = Path(root)
            self._check_on_init()

        def scan(self, split: str) -> Scan:
            return scan_folders(self.root / split / "images", self.root / split / "masks",
                                encoding=LabelEncoding.indices("MyData", 2, ignore=[255]))

and ``data: {class_path: my_data.MyDataModule, init_args: {root: ...}}`` in YAML
(`aspp_seg.data.datasets` says how to give the data set's classes and ``evaluate``
format too).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, get_worker_info

from aspp_seg.data.cache import cached_dataset
from aspp_seg.data.dataset import SegmentationDataset, collate_eval, load_sample
from aspp_seg.data.datasets import camvid, cityscapes, demo, folder
from aspp_seg.data.parallel import ignore_ctrl_c
from aspp_seg.data.predict_source import predict_loader
from aspp_seg.data.sampler import UnpaddedDistributedSampler
from aspp_seg.data.scan import Scan
from aspp_seg.data.transforms import eval_transform, train_transform
from aspp_seg.errors import ConfigError

_CHECK_ON_INIT: ContextVar[bool] = ContextVar("check_layout_on_init", default=True)
_FIT_PROCESSES: ContextVar[tuple[int, int] | None] = ContextVar("fit_processes", default=None)


@contextmanager
def fitting_with(processes: int, accumulate_grad_batches: int = 1) -> Iterator[None]:
    """Data modules built inside this block are for a ``fit`` on `processes` training
    processes: their layout check also refuses a split that gives some process no
    training batch (the CLI builds the data module before the network)."""
    token = _FIT_PROCESSES.set((processes, accumulate_grad_batches))
    try:
        yield
    finally:
        _FIT_PROCESSES.reset(token)


@contextmanager
def layout_check_deferred() -> Iterator[None]:
    """Data modules built inside this block do not check their layout in ``__init__``
    (`aspp-seg check-data` builds one to list every problem, not stop at the first)."""
    token = _CHECK_ON_INIT.set(False)
    try:
        yield
    finally:
        _CHECK_ON_INIT.reset(token)


def _seed_worker(worker_id: int, *, rank: int) -> None:
    """Gives each data worker (and each rank) its own augmentation stream, and leaves
    Ctrl-C to the main process (`ignore_ctrl_c`).

    Albumentations keeps its own random state inside the pipeline; forked workers
    would otherwise all copy one state and draw identical crops and flips.
    """
    ignore_ctrl_c()
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed((info.seed + 1_000_003 * rank) % 2**32)


def auto_num_workers(devices_per_node: int) -> int:
    """Data workers per device: this process's CPU cores shared by the node's devices
    (at most 8 each, enough for about 70 full-size crops/s; see docs/scaling.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // max(1, devices_per_node)))


def _check_count(name: str, value: object, *, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise ConfigError(f"data.{name}={value!r} must be {allowed}")


def _check_size(name: str, value: object) -> None:
    if value is None:
        return
    ok = isinstance(value, Sequence) and len(value) == 2
    if not ok or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        shown = list(value) if isinstance(value, Sequence) else value
        raise ConfigError(
            f"data.{name}={shown!r} must be [height, width], two integers >= 1, or null"
        )


def per_device_batch_size(
    global_batch_size: int, *, world_size: int, accumulate_grad_batches: int = 1
) -> int:
    """Per-device batch of one step so that all devices and accumulation give the global one.

    Raises:
        ConfigError: when the global batch does not divide evenly.
    """
    parts = world_size * accumulate_grad_batches
    if global_batch_size < 1 or global_batch_size % parts:
        raise ConfigError(
            f"data.global_batch_size={global_batch_size} must be a positive multiple of "
            f"devices x nodes x accumulate_grad_batches = {world_size} x "
            f"{accumulate_grad_batches} = {parts}"
        )
    return global_batch_size // parts


class SegmentationDataModule(LightningDataModule):
    """What every aspp-seg data module shares; subclasses say where a split's files are.

    Args:
        batch_size: training images per device and step (>= 1).
        val_batch_size: images per device in validation, test and predict (>= 1).
        num_workers: data-loading processes per device (>= 0); None (auto): the CPU
            cores this process may use, shared by the devices of the node, at most 8.
        crop_size: (height, width) random training crop; None for whole images.
        image_size: (height, width) resize of the images before cropping and for
            evaluation; None keeps the files' size. Evaluation labels are never
            resized: validation and test score at each label file's own size.
        augment: augmentation preset, one of `aspp_seg.data.transforms.PRESETS`.
        scale_range: ``deeplabv3`` preset: range of the random scale.
        cat_max_ratio: ``deeplabv3`` preset: re-draw a crop while one class covers more
            than this share of it; 1.0 = off (0.75 is mmsegmentation's value).
        train_split, val_split, test_split: split names for fit, validate/fit and
            test/predict.
        predict_source: an image file, a folder or a glob pattern for ``aspp-seg
            predict`` (see `aspp_seg.data.predict_source`); None predicts the test split.
            When set, no data set layout is checked.
        cache_dir: a decoded cache written by ``aspp-seg cache`` (one folder per split
            role); workers then read raw pixels instead of decoding PNGs. None: decode.
        global_batch_size: when set (>= 1), ``batch_size`` per device becomes this
            divided by devices x nodes x accumulate_grad_batches (must divide evenly),
            so the global batch, and the LR that goes with it, stay fixed on any number
            of GPUs. See `per_device_batch_size`.

    Raises:
        ConfigError: naming the setting that is out of range and the allowed values.

    Batches: training ``{"image": B x 3 x h x w uint8, "mask": B x h x w uint8, "name":
    list[str]}``; validation and test add ``"label_size"`` (B x 2 int64, each label's
    own H, W) and hold masks at the label files' size, padded with 255 to the largest
    of the batch (`aspp_seg.data.dataset.collate_eval`).
    """

    class_names: Sequence[str] = ()
    palette: Sequence[tuple[int, int, int]] = ()

    def __init__(
        self,
        *,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int | None = None,
        crop_size: tuple[int, int] | None = None,
        image_size: tuple[int, int] | None = None,
        augment: str = "none",
        scale_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 1.0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        predict_source: str | None = None,
        cache_dir: str | None = None,
        global_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_count("batch_size", batch_size, minimum=1)
        _check_count("val_batch_size", val_batch_size, minimum=1)
        _check_count("num_workers", num_workers, minimum=0, optional=True)
        _check_count("global_batch_size", global_batch_size, minimum=1, optional=True)
        _check_size("crop_size", crop_size)
        _check_size("image_size", image_size)
        if not (
            isinstance(scale_range, Sequence)
            and len(scale_range) == 2
            and 0 < scale_range[0] <= scale_range[1]
        ):
            raise ConfigError(
                f"data.scale_range={scale_range!r} must be [min, max] with 0 < min <= max"
            )
        if not 0 < cat_max_ratio <= 1:
            raise ConfigError(f"data.cat_max_ratio={cat_max_ratio!r} must be in (0, 1]")
        for name, split in (
            ("train_split", train_split),
            ("val_split", val_split),
            ("test_split", test_split),
        ):
            if not isinstance(split, str) or not split:
                raise ConfigError(f"data.{name}={split!r} must be a non-empty split name")
        self.predict_source = predict_source
        self.cache_dir = cache_dir
        self.global_batch_size = global_batch_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.train_tf = train_transform(
            augment,
            crop_size=crop_size,
            image_size=image_size,
            scale_range=scale_range,
            cat_max_ratio=cat_max_ratio,
        )
        self.eval_tf = eval_transform(image_size=image_size)
        self.datasets: dict[str, SegmentationDataset] = {}

    # --- layout ---

    def scan(self, split: str) -> Scan:
        """The samples and layout problems of one split (`split` as configured)."""
        raise NotImplementedError

    def scan_training(self) -> Scan:
        """The training samples (a subclass may add extra sources, e.g. coarse labels)."""
        return self.scan(self.train_split)

    def fit_splits(self) -> dict[str, Scan]:
        """Scans of the splits that ``fit`` reads, by role."""
        return {"train": self.scan_training(), "val": self.scan(self.val_split)}

    def check_layout(self) -> None:
        """Fails fast, before any model is built, with the first layout problem (and,
        for a fit, with a split too small to give every process a training batch)."""
        if self.predict_source is not None:
            return  # predicting on given images needs no data set
        scans = self.fit_splits()
        for scan in scans.values():
            scan.raise_first()
        self.check_training_batches(len(scans["train"].samples))

    def check_training_batches(self, frames: int) -> None:
        """Refuses a fit in which some process would get no training batch.

        Lightning's distributed sampler gives each of P processes ceil(frames / P)
        frames, and training drops an incomplete last batch, so a process needs at least
        one full batch of its share. Checked only for a fit (`fitting_with`).

        Raises:
            ConfigError: with the frames, processes and batch size.
        """
        fitting = _FIT_PROCESSES.get()
        if fitting is None:
            return
        processes, accumulate = fitting
        batch = self.batch_size
        if self.global_batch_size is not None:
            batch = per_device_batch_size(
                self.global_batch_size, world_size=processes, accumulate_grad_batches=accumulate
            )
        share = -(-frames // processes)
        if share >= batch:
            return
        spread = f" over {processes} processes ({share} each)" if processes > 1 else ""
        fix = f"data.batch_size <= {share}" + (" or fewer devices" if processes > 1 else "")
        raise ConfigError(
            f"fit would train nothing: {frames} training frames{spread} make no full batch "
            f"of data.batch_size={batch} (an incomplete last batch is dropped); set {fix}"
        )

    def _check_on_init(self) -> None:
        """Subclasses call this at the end of ``__init__``, once `scan` can run."""
        if _CHECK_ON_INIT.get():
            self.check_layout()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- Lightning hooks ---

    def setup(self, stage: str) -> None:
        if self.global_batch_size is not None and self.trainer is not None:
            self.batch_size = per_device_batch_size(
                self.global_batch_size,
                world_size=self.trainer.world_size,
                accumulate_grad_batches=self.trainer.accumulate_grad_batches,
            )
        wanted = {
            "fit": {"train": self.train_tf, "val": self.eval_tf},
            "validate": {"val": self.eval_tf},
            "test": {"test": self.eval_tf},
            "predict": {} if self.predict_source is not None else {"test": self.eval_tf},
        }.get(stage, {})
        for role, tf in wanted.items():
            if role in self.datasets:
                continue
            if role == "train":
                scan = self.scan_training()
            else:
                scan = self.scan(self.val_split if role == "val" else self.test_split)
            samples = scan.raise_first()
            at_file_size = role != "train"  # scores at the label's own resolution
            if self.cache_dir is not None:
                dataset = cached_dataset(
                    self.cache_dir, role, samples, tf, label_at_file_size=at_file_size
                )
            else:
                dataset = SegmentationDataset(samples, tf, label_at_file_size=at_file_size)
            if samples:
                # One file read here, in the main process: a data set stored wholesale in
                # the wrong label kind stops before the first step, with a plain error.
                load_sample(samples[0])
            if role == "train" and hasattr(tf, "set_random_seed"):
                # Follows seed_everything when loading in the main process.
                tf.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
            self.datasets[role] = dataset

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return auto_num_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def _loader(self, role: str, *, train: bool) -> DataLoader:
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        workers = self._workers()
        sampler = None
        if not train and world_size > 1:
            sampler = UnpaddedDistributedSampler(
                self.datasets[role], num_replicas=world_size, rank=rank
            )
        return DataLoader(
            self.datasets[role],
            batch_size=self.batch_size if train else self.val_batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train,
            num_workers=workers,
            collate_fn=None if train else collate_eval,
            pin_memory=on_gpu,  # page-locked buffers speed up host-to-GPU copies only
            persistent_workers=workers > 0,
            worker_init_fn=functools.partial(_seed_worker, rank=rank),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_source is not None:
            return predict_loader(
                self.predict_source,
                self.eval_tf,
                batch_size=self.val_batch_size,
                num_workers=self._workers(),
            )
        return self._loader("test", train=False)


# --- the data modules of this package's data sets (aspp_seg.data.datasets) ---
#
# Each data set file says what its files hold (classes, palette, encodings, scan,
# evaluate formats) without torch; its data module, here, is what fit, validate, test,
# predict, check-data and cache build from a config's ``data.class_path``.


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes: fine annotations (optionally + coarse), train for fitting, val for
    validation and test.

    Labels are read from ``*_gtFine_labelTrainIds.png`` where `aspp-seg
    prepare-cityscapes` wrote them, else mapped from ``*_gtFine_labelIds.png``; a file
    holding the other kind than its name says is named in the error.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/`` (and ``gtCoarse/``).
        crop_size: the study's 513 x 513 crop by default.
        test_split: split used by ``aspp-seg test`` (Cityscapes' own test labels are
            withheld, so ``val`` is the default).
        coarse: add the coarse ``train_extra`` split (gtCoarse, 19,998 frames) to
            training.
        label_kind: ``auto``, ``labelTrainIds`` or ``labelIds``: which label files to
            read (auto: labelTrainIds where present).
        **kwargs: the shared settings of `SegmentationDataModule` (``train_split`` may
            also be ``trainval``: train + val, for a test-server run).
    """

    class_names = cityscapes.CLASSES
    palette = cityscapes.PALETTE

    def __init__(
        self,
        root: str = "data/cityscapes",
        *,
        crop_size: tuple[int, int] | None = (513, 513),
        test_split: str = "val",
        coarse: bool = False,
        label_kind: str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(crop_size=crop_size, test_split=test_split, **kwargs)
        self.save_hyperparameters()
        self.root = Path(root)
        self.coarse = coarse
        self.label_kind = label_kind
        self._check_on_init()

    def scan(self, split: str) -> Scan:
        return cityscapes.scan_split(self.root, split, label_kind=self.label_kind)

    def scan_training(self) -> Scan:
        scan = self.scan(self.train_split)
        if self.coarse:
            extra = cityscapes.scan_split(
                self.root, "train_extra", annotation="gtCoarse", label_kind=self.label_kind
            )
            scan = Scan(scan.samples + extra.samples, scan.problems + extra.problems)
        return scan


class CamVidDataModule(SegmentationDataModule):
    """CamVid in the SegNet tutorial layout: ``train/ trainannot/ val/ valannot/ test/
    testannot/``, 360x480 PNGs, 11 classes, label 11 (void) ignored.

    Args:
        root: the folder holding ``train/`` and ``trainannot/`` etc.
        val_batch_size, num_workers: CamVid defaults (4 equal-sized frames, 2 workers).
        **kwargs: the shared settings of `SegmentationDataModule`.
    """

    class_names = camvid.CLASSES
    palette = camvid.PALETTE
    encoding = camvid.ENCODING

    def __init__(
        self,
        root: str = "data/camvid",
        *,
        val_batch_size: int = 4,
        num_workers: int | None = 2,
        **kwargs,
    ) -> None:
        super().__init__(val_batch_size=val_batch_size, num_workers=num_workers, **kwargs)
        self.save_hyperparameters()
        self.root = Path(root)
        self._check_on_init()

    def scan(self, split: str) -> Scan:
        return camvid.scan_split(self.root, split)


class FolderDataModule(SegmentationDataModule):
    """Your own data: an image folder and a mask folder per split, and a class YAML.

    Masks are single-channel PNGs holding a class index per pixel, named like their
    image (``images/x.jpg`` -> ``masks/x.png``). The class YAML (see
    `aspp_seg.data.datasets.folder`) gives the names, an optional palette and the
    ignore value.

    Args:
        root: the data set folder.
        classes: class YAML; a relative path is read from `root`.
        image_dir: image folder of a split, ``{split}`` replaced by the split name.
        mask_dir: mask folder of a split, likewise.
        mask_suffix: what replaces an image's extension in its mask's name.
        **kwargs: the shared settings of `SegmentationDataModule`.
    """

    def __init__(
        self,
        root: str,
        *,
        classes: str = "classes.yaml",
        image_dir: str = "{split}/images",
        mask_dir: str = "{split}/masks",
        mask_suffix: str = ".png",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        for name, value in (("image_dir", image_dir), ("mask_dir", mask_dir)):
            if "{split}" not in value:
                raise ConfigError(f"data.{name}={value!r} must contain {{split}}")
        self.root = Path(root)
        self.image_dir = image_dir
        self.mask_dir = mask_dir
        self.mask_suffix = mask_suffix
        classes_path = Path(classes) if Path(classes).is_absolute() else self.root / classes
        self.table = folder.load_class_table(classes_path)
        self.class_names = self.table.names
        self.palette = self.table.palette
        self._check_on_init()

    def scan(self, split: str) -> Scan:
        return folder.scan_folders(
            self.root / self.image_dir.format(split=split),
            self.root / self.mask_dir.format(split=split),
            encoding=self.table.encoding,
            mask_suffix=self.mask_suffix,
            setting=f"data.root={self.root}",
        )


class DemoDataModule(CityscapesDataModule):
    """The synthetic demo: generated on first use under `root`, then read as Cityscapes.

    The generator's settings are kept beside its files (``root/.complete``); when they
    differ from those asked for here, the set is generated again (only the files the
    generator owns are replaced, and one line says so). A non-empty `root` that holds
    no demo set is refused, in ``__init__``, and left untouched.

    Args:
        root: the demo folder: new, empty, or one the generator wrote.
        num_train, num_val: frames per split to generate (>= 1, >= 0).
        height, width: size of the generated frames (>= 1).
        seed: generator seed (>= 0; the data set is a pure function of the settings).
            For each generator setting, None keeps the value of the set under `root`
            (the default, `demo.DEFAULT_SETTINGS`, when there is none yet): 240 + 60
            frames of 128 x 256, seed 0.
        val_batch_size, num_workers, crop_size: demo defaults (8, 2, whole frames).
        test_split: split that ``aspp-seg test`` evaluates; ``train`` gives the study's
            train-set mIoU (Table 2), with the evaluation transform (no augmentation).
        **kwargs: the shared settings of `SegmentationDataModule`.
    """

    def __init__(
        self,
        root: str = "data/demo",
        *,
        num_train: int | None = None,
        num_val: int | None = None,
        height: int | None = None,
        width: int | None = None,
        seed: int | None = None,
        val_batch_size: int = 8,
        num_workers: int | None = 2,
        crop_size: tuple[int, int] | None = None,
        **kwargs,
    ) -> None:
        requested = {
            "num_train": num_train,
            "num_val": num_val,
            "height": height,
            "width": width,
            "seed": seed,
        }
        self.generator_args = {k: v for k, v in requested.items() if v is not None}
        demo.check_settings(self.generator_args)
        super().__init__(
            root,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            coarse=False,
            label_kind="auto",
            **kwargs,
        )

    def check_layout(self) -> None:
        if self.predict_source is not None:
            return
        demo.check_demo_root(self.root)
        settings = demo.settings_to_generate(self.root, self.generator_args)
        if settings is None:
            super().check_layout()
        else:  # prepare_data generates it first: its size is known already
            self.check_training_batches(settings["num_train"])

    def prepare_data(self) -> None:
        if self.predict_source is None:
            demo.ensure_demo(self.root, self.generator_args)
