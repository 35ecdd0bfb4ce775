"""A new data set is one class (how images pair with labels + its LabelEncoding) and a
YAML: here one defined in this file only, fitted through ``--data`` class_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data import SegmentationDataModule
from aspp_seg.data.dataset import MISSING_PARTNER, Problem, Sample, Scan
from aspp_seg.data.labels import LabelEncoding

REPO = Path(__file__).resolve().parents[2]


class PngPairsDataModule(SegmentationDataModule):
    """``<root>/<split>/<name>.png`` images with ``<name>.label.png`` masks, 3 classes.

    Args:
        root: the data set folder.
        **kwargs: the shared settings of `SegmentationDataModule`.
    """

    class_names = ("ground", "wall", "sky")
    palette = ((128, 64, 128), (102, 102, 156), (70, 130, 180))
    encoding = LabelEncoding.indices("PngPairs", 3, ignore=[255])

    def __init__(self, root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self._check_on_init()

    def scan(self, split: str) -> Scan:
        scan = Scan()
        for image in sorted((self.root / split).glob("*.png")):
            if image.name.endswith(".label.png"):
                continue
            label = image.with_name(image.stem + ".label.png")
            if label.is_file():
                scan.samples.append(Sample(image, label, self.encoding))
            else:
                scan.problems.append(Problem(MISSING_PARTNER, f"{image} has no {label}"))
        return scan


def _write_set(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            mask = np.zeros((32, 48), np.uint8)
            mask[: rng.integers(8, 16)] = 2
            mask[:, rng.integers(30, 40) :] = 1
            mask[0, 0] = 255
            image = (mask[..., None] * 80 + rng.integers(0, 30, (32, 48, 3))).astype(np.uint8)
            Image.fromarray(image).save(root / split / f"f{i}.png")
            Image.fromarray(mask).save(root / split / f"f{i}.label.png")


def test_a_data_module_defined_in_a_test_file_fits_the_demo_net(tmp_path, monkeypatch):
    _write_set(tmp_path / "pairs")
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(REPO / "configs" / "demo.yaml"),
          "--data", f"{__name__}.PngPairsDataModule",
          "--data.init_args.root", str(tmp_path / "pairs"),
          "--data.init_args.batch_size", "2", "--data.init_args.val_batch_size", "2",
          "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.channels", "16",
          "--trainer.max_epochs", "1", "--trainer.logger", "false",
          "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    checkpoint = torch.load(next((tmp_path / "run").rglob("*.ckpt")), weights_only=False)
    assert checkpoint["global_step"] == 2  # 4 frames / batch 2
    head = [v for k, v in checkpoint["state_dict"].items() if k.endswith(".weight")][-1]
    assert head.shape[0] == 3  # the model took its class count from the data module
