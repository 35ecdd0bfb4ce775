"""Users' own data: image + mask folders and a class YAML, no code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data import FolderDataModule
from aspp_seg.data.datasets.folder import load_class_table
from aspp_seg.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
CLASSES = {"names": ["background", "road", "car"], "palette": [[0, 0, 0], [1, 2, 3], [4, 5, 6]]}


def _make(root: Path, *, ignore: int = 255, n: dict | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (n or {"train": 4, "val": 2}).items():
        (root / split / "images" / "sub").mkdir(parents=True)
        (root / split / "masks" / "sub").mkdir(parents=True)
        for i in range(count):
            mask = rng.integers(0, 3, size=(24, 40)).astype(np.uint8)
            mask[:2] = ignore
            image = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / "sub" / f"f{i}.jpg")
            Image.fromarray(mask).save(root / split / "masks" / "sub" / f"f{i}.png")
    (root / "classes.yaml").write_text(yaml.safe_dump({**CLASSES, "ignore_index": ignore}))
    return root


@pytest.mark.parametrize("ignore", [255, 99])
def test_folder_pairs_maps_and_ignores(tmp_path, ignore):
    root = _make(tmp_path / "d", ignore=ignore)
    dm = FolderDataModule(str(root), num_workers=0)
    assert dm.num_classes == 3 and dm.class_names == ("background", "road", "car")
    assert dm.palette[2] == (4, 5, 6)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 2
    mask = dm.datasets["val"][0]["mask"].numpy()
    assert mask.shape == (24, 40)
    assert (mask[:2] == 255).all() and set(np.unique(mask[2:])) <= {0, 1, 2}


def test_missing_mask_and_bad_values_are_named(tmp_path):
    root = _make(tmp_path / "d")
    (root / "train" / "masks" / "sub" / "f1.png").unlink()
    with pytest.raises(DataError, match=r"image .*f1\.jpg has no mask file .*sub/f1\.png"):
        FolderDataModule(str(root), num_workers=0)
    Image.fromarray(np.full((24, 40), 7, np.uint8)).save(
        root / "train" / "masks" / "sub" / "f1.png"
    )
    dm = FolderDataModule(str(root), num_workers=0)
    dm.setup("fit")
    with pytest.raises(DataError, match=r"f1\.png holds values 7 outside .*allowed: 0-2, 255"):
        dm.datasets["train"][1]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"names": []}, "needs names"),
        ({"names": ["a", "b"], "palette": [[0, 0, 0]]}, "palette must hold one"),
        ({"names": ["a", "b"], "ignore_index": 1}, "ignore_index must be"),
    ],
)
def test_bad_class_files_name_the_file_and_key(tmp_path, spec, needle):
    path = tmp_path / "classes.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=needle) as error:
        load_class_table(path)
    assert str(path) in str(error.value)
    with pytest.raises(ConfigError, match="not found"):
        load_class_table(tmp_path / "nope.yaml")


def test_example_config_checks_and_fits(tmp_path, monkeypatch, capsys):
    root = _make(tmp_path / "d", n={"train": 4, "val": 2})
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "folder_example.yaml")
    main(["check-data", "--config", config, "--data.init_args.root", str(root),
          "--splits", "[train, val]", "--workers", "1"])  # fmt: skip
    assert "no problems: 6 image/label pairs" in capsys.readouterr().out
    main([
        "fit", "--config", config,
        "--data.init_args.root", str(root),
        "--data.init_args.crop_size", "[32, 32]",
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.backbone", "resnet18",
        "--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    table = (tmp_path / "runs" / "folder" / "version_0" / "val_iou.csv").read_text()
    assert table.splitlines()[0] == "background,road,car,mIoU"
