"""A data set of your own is one file plus one YAML: the file (classes, palette, label
encoding, scan and ``evaluate`` format, laid out as the files of `aspp_seg.data.datasets`,
and its data module, a top-level class) is written here into ``tmp_path``, outside the
package; the YAML names its data module. It trains, validates and is scored by
``aspp-seg evaluate`` with its own format."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aspp_seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]

DATA_SET_FILE = '''
"""PNG pairs: ``<root>/<split>/<name>.png`` images with ``<name>.label.png`` masks."""

from pathlib import Path

from aspp_seg.data.datamodules import SegmentationDataModule
from aspp_seg.data.datasets import EvalFormat
from aspp_seg.data.labels import LabelEncoding
from aspp_seg.data.scan import MISSING_PARTNER, Problem, Sample, Scan

CLASSES = ("ground", "wall", "sky")
PALETTE = ((128, 64, 128), (102, 102, 156), (70, 130, 180))
ENCODING = LabelEncoding.indices("PngPairs", len(CLASSES), ignore=[255])


def scan_split(root, split: str) -> Scan:
    scan = Scan()
    for image in sorted((Path(root) / split).glob("*.png")):
        if image.name.endswith(".label.png"):
            continue
        label = image.with_name(image.stem + ".label.png")
        if label.is_file():
            scan.samples.append(Sample(image, label, ENCODING))
        else:
            scan.problems.append(Problem(MISSING_PARTNER, f"{image} has no {label}"))
    return scan


def pair_key(path: Path) -> str:
    return path.name.removesuffix(".png").removesuffix(".label")


FORMATS = (
    EvalFormat(
        name="pngpairs",
        class_names=CLASSES,
        truth=ENCODING,
        prediction=ENCODING.with_void(),
        gt_globs=("*.label.png",),
        key=pair_key,
        help="PNG pairs: 0..2, 255 = ignore",
    ),
)


class PngPairsDataModule(SegmentationDataModule):
    """PNG pairs, 3 classes.

    Args:
        root: the data set folder.
        **kwargs: the shared settings of `SegmentationDataModule`.
    """

    class_names = CLASSES
    palette = PALETTE

    def __init__(self, root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self._check_on_init()

    def scan(self, split: str) -> Scan:
        return scan_split(self.root, split)
'''


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


@pytest.fixture
def data_set(tmp_path, monkeypatch):
    """``png_pairs.py`` (the data set file) on the path, its YAML, and its files."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "png_pairs.py").write_text(DATA_SET_FILE.lstrip())
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    _write_set(tmp_path / "pairs")
    config = tmp_path / "png_pairs.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            data:
              class_path: png_pairs.PngPairsDataModule
              init_args:
                root: {tmp_path / "pairs"}
                batch_size: 2
                val_batch_size: 2
                num_workers: 0
            """)
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path, config
    sys.modules.pop("png_pairs", None)


TINY = ["--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]  # fmt: skip


def test_a_data_set_file_and_a_yaml_fit_validate_and_evaluate(data_set, capsys):
    tmp_path, config = data_set
    demo = str(REPO / "configs" / "demo.yaml")
    main(["fit", "--config", demo, "--config", str(config), *TINY,
          "--trainer.max_epochs", "1", "--trainer.callbacks", "[]",
          "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["global_step"] == 2  # 4 frames / batch 2
    head = [v for k, v in checkpoint["state_dict"].items() if k.endswith(".weight")][-1]
    assert head.shape[0] == 3  # the model took its class count from the data module

    for table in tmp_path.rglob("val_iou.md"):  # fit's
        table.unlink()
    main(["validate", "--config", demo, "--config", str(config), *TINY,
          "--ckpt_path", str(ckpt)])  # fmt: skip
    (table,) = tmp_path.rglob("val_iou.md")
    assert table.read_text().startswith("| ground | wall | sky | mIoU |")  # the data's classes

    # predictions: the val labels with the wall (class 1) painted as ground, 255 as void
    for label in sorted((tmp_path / "pairs" / "val").glob("*.label.png")):
        pred = np.array(Image.open(label))
        pred[pred == 1] = 0
        (tmp_path / "pred").mkdir(exist_ok=True)
        Image.fromarray(pred).save(tmp_path / "pred" / label.name.replace(".label", ""))
    capsys.readouterr()
    main(["evaluate", "--gt", str(tmp_path / "pairs" / "val"), "--pred", str(tmp_path / "pred"),
          "--format", "png_pairs", "--json", str(tmp_path / "scores.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert "2 image pairs scored" in out and "| ground | wall | sky | mIoU |" in out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["iou"]["wall"] == 0.0 and scores["iou"]["sky"] == 1.0
    assert 0 < scores["iou"]["ground"] < 1

    by_file = tmp_path / "by_file.json"  # the same file named by its path
    main(["evaluate", "--gt", str(tmp_path / "pairs" / "val"), "--pred", str(tmp_path / "pred"),
          "--format", str(tmp_path / "code" / "png_pairs.py") + ":pngpairs",
          "--json", str(by_file)])  # fmt: skip
    assert json.loads(by_file.read_text())["iou"] == scores["iou"]


def test_the_data_module_is_a_plain_class_named_as_the_config_names_it(data_set):
    """What LightningCLI writes into a run's config.yaml and what pickling needs."""
    import importlib
    import pickle

    from jsonargparse._util import get_import_path

    cls = importlib.import_module("png_pairs").PngPairsDataModule  # the file on the path
    assert get_import_path(cls) == "png_pairs.PngPairsDataModule"
    assert pickle.loads(pickle.dumps(cls)) is cls
