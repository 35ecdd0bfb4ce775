"""LightningDataModules: Cityscapes, and the synthetic demo in Cityscapes layout."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from aspp_seg.data.cityscapes import CityscapesDataset, find_pairs
from aspp_seg.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from aspp_seg.data.synthetic import generate_demo_cityscapes, is_generated
from aspp_seg.data.transforms import eval_transform, train_transform


class CityscapesDataModule(LightningDataModule):
    """Cityscapes fine annotations: train for fitting, val for validation and test.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        batch_size: training images per device and step.
        val_batch_size: images per device in validation and test.
        num_workers: data-loading processes per device.
        crop_size: (height, width) random training crop; None for whole images.
        image_size: (height, width) resize applied before cropping and for
            evaluation; None keeps the files' size (the benchmark protocol).
        augment: augmentation preset (see `aspp_seg.data.transforms.PRESETS`).
        test_split: split used by ``aspp-seg test`` (Cityscapes' own test labels are
            withheld, so ``val`` is the default).
    """

    class_names = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(
        self,
        root: str = "data/cityscapes",
        *,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 4,
        crop_size: tuple[int, int] | None = (513, 513),
        image_size: tuple[int, int] | None = None,
        augment: str = "none",
        test_split: str = "val",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.test_split = test_split
        self.train_tf = train_transform(augment, crop_size=crop_size, image_size=image_size)
        self.eval_tf = eval_transform(image_size=image_size)
        self.datasets: dict[str, CityscapesDataset] = {}
        self.check_layout()

    def check_layout(self) -> None:
        """Fails fast, before any model is built, when the root or a split is missing."""
        for split in ("train", "val"):
            find_pairs(self.root, split)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str) -> None:
        wanted = {
            "fit": {"train": self.train_tf, "val": self.eval_tf},
            "validate": {"val": self.eval_tf},
            "test": {self.test_split: self.eval_tf},
            "predict": {self.test_split: self.eval_tf},
        }.get(stage, {})
        for split, tf in wanted.items():
            if split not in self.datasets:
                self.datasets[split] = CityscapesDataset(self.root, split, tf)

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.val_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=True,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, train=False)


class DemoDataModule(CityscapesDataModule):
    """The synthetic demo: generated on first use under `root`, then read as Cityscapes.

    Args:
        num_train, num_val: frames per split to generate.
        height, width: size of the generated frames.
        seed: generator seed (the data set is a pure function of it).
        Other arguments: see `CityscapesDataModule`.
    """

    def __init__(
        self,
        root: str = "data/demo",
        *,
        num_train: int = 240,
        num_val: int = 60,
        height: int = 128,
        width: int = 256,
        seed: int = 0,
        batch_size: int = 8,
        val_batch_size: int = 8,
        num_workers: int = 2,
        crop_size: tuple[int, int] | None = None,
        image_size: tuple[int, int] | None = None,
        augment: str = "none",
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            crop_size=crop_size,
            image_size=image_size,
            augment=augment,
        )
        self.generator_args = {
            "num_train": num_train,
            "num_val": num_val,
            "height": height,
            "width": width,
            "seed": seed,
        }

    def check_layout(self) -> None:
        if is_generated(self.root):
            super().check_layout()

    def prepare_data(self) -> None:
        if not is_generated(self.root):
            print(f"Generating the synthetic demo data set in {self.root} ...")
            generate_demo_cityscapes(self.root, **self.generator_args)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, train=False)
