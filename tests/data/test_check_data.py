"""`aspp-seg check-data` finds each planted fault and names its files; training stops at
the first with one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data import CityscapesDataModule
from aspp_seg.data.dataset import SegmentationDataset
from aspp_seg.data.datasets.cityscapes import find_samples, to_train_ids
from aspp_seg.data.datasets.demo import generate_demo_cityscapes
from aspp_seg.data.transforms import eval_transform
from aspp_seg.errors import DataError

NET = {
    "class_path": "aspp_seg.models.deeplabv3",
    "init_args": {"backbone": "resnet10t", "pretrained": False},
}


def _config(tmp_path, root, **init_args):
    config = tmp_path / "config.yaml"
    data = {"class_path": "aspp_seg.data.CityscapesDataModule", "init_args": {"root": str(root)}}
    data["init_args"].update(init_args)
    spec = {"trainer": {"max_epochs": 1}, "model": {"net": NET}, "data": data}
    config.write_text(yaml.safe_dump(spec))
    return config


def _check(config, capsys, *extra):
    with pytest.raises(SystemExit) as exit_info:
        main(["check-data", "--config", str(config), "--workers", "1", *extra])
    return exit_info.value.code, capsys.readouterr().out


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    return generate_demo_cityscapes(root, num_train=8, num_val=4, height=32, width=64, seed=3)


@pytest.fixture
def faulty(clean, tmp_path):
    """A copy of `clean` with one of each fault planted; returns (root, the files)."""
    root = tmp_path / "faulty"
    shutil.copytree(clean, root)
    train = sorted((root / "gtFine" / "train").glob("*/*_gtFine_labelIds.png"))
    images = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    val = sorted((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    planted = {}

    train[0].unlink()
    planted["missing"] = (images[0].name, train[0].name)

    data = images[1].read_bytes()
    images[1].write_bytes(data[: len(data) // 2])
    planted["truncated"] = images[1].name

    Image.fromarray(np.zeros((16, 64), np.uint8)).save(train[2])
    planted["size"] = train[2].name

    label = np.asarray(Image.open(train[3])).copy()
    label[0, :5] = 200
    Image.fromarray(label).save(train[3])
    planted["out_of_table"] = train[3].name

    # A labelTrainIds file that holds labelIds (copied, not converted) ...
    as_train_ids = val[0].with_name(val[0].name.replace("_labelIds", "_labelTrainIds"))
    shutil.copy(val[0], as_train_ids)
    planted["label_ids_as_train_ids"] = as_train_ids.name
    # ... and a labelIds file that holds trainIds.
    train_ids = to_train_ids(np.asarray(Image.open(val[1]))).copy()
    train_ids[-2:] = 255  # a void strip (the ego vehicle), as in every Cityscapes frame
    Image.fromarray(train_ids).save(val[1])
    planted["train_ids_as_label_ids"] = val[1].name

    (root / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    (root / "gtFine" / "test" / "berlin").mkdir(parents=True)
    return root, planted


def test_clean_data_passes(clean, tmp_path, capsys):
    config = _config(tmp_path, clean)
    main(["check-data", "--config", str(config), "--workers", "1"])
    out = capsys.readouterr().out
    assert "no problems: 12 image/label pairs decoded and checked" in out


def test_every_planted_fault_is_found_and_named(faulty, tmp_path, capsys):
    root, planted = faulty
    config = _config(tmp_path, root, test_split="test")
    code, out = _check(config, capsys)
    assert code == 1
    sections = {}
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("    ") and line.rstrip().endswith("):"):
            current = line.strip().rsplit(" (", 1)[0]
            sections[current] = []
        elif line.startswith("    "):
            sections[current].append(line.strip())

    def lines(kind):
        return "\n".join(sections.get(kind, []))

    assert planted["missing"][0] in lines("missing partner file")
    assert planted["missing"][1] in lines("missing partner file")
    assert planted["truncated"] in lines("unreadable or truncated file")
    assert planted["size"] in lines("image/label size mismatch")
    assert "32" in lines("image/label size mismatch") and "16" in lines("image/label size mismatch")
    assert planted["out_of_table"] in lines("label values outside the class table")
    assert "200" in lines("label values outside the class table")
    wrong_kind = lines("labelIds where trainIds were expected (or the reverse)")
    assert planted["label_ids_as_train_ids"] in wrong_kind
    assert planted["train_ids_as_label_ids"] in wrong_kind
    assert (
        "holds Cityscapes labelIds" in wrong_kind and "holds Cityscapes labelTrainIds" in wrong_kind
    )
    assert "leftImg8bit/test" in lines("empty split")
    # Each fault is reported once, under its own kind only.
    assert sum(len(v) for v in sections.values()) == 7


def test_layout_only_and_override_of_the_root(faulty, clean, tmp_path, capsys):
    root, planted = faulty
    config = _config(tmp_path, clean)
    code, out = _check(config, capsys, "--data.init_args.root", str(root), "--no_full")
    assert code == 1
    assert planted["missing"][1] in out and planted["truncated"] not in out


def test_training_path_fails_with_one_line_naming_the_file(faulty):
    root, planted = faulty
    with pytest.raises(DataError, match=planted["missing"][1]):
        CityscapesDataModule(str(root), num_workers=0)
    (root / "leftImg8bit" / "train" / "aachen" / planted["missing"][0]).unlink()
    dm = CityscapesDataModule(str(root), num_workers=0, crop_size=None)
    # setup reads the first file of each split: here the truncated image.
    with pytest.raises(DataError, match=f"cannot read image .*{planted['truncated']}"):
        dm.setup("fit")
    train = SegmentationDataset(find_samples(root, "train"), eval_transform())
    by_name = {s.label.name: i for i, s in enumerate(train.samples)}
    for key in ("size", "out_of_table"):
        with pytest.raises(DataError, match=planted[key]) as error:
            train[by_name[planted[key]]]
        assert "\n" not in str(error.value)
    val = SegmentationDataset(find_samples(root, "val"), eval_transform())
    by_name = {s.label.name: i for i, s in enumerate(val.samples)}
    with pytest.raises(DataError, match=r"holds Cityscapes labelIds .* where labelTrainIds"):
        val[by_name[planted["label_ids_as_train_ids"]]]
    with pytest.raises(DataError, match=r"holds Cityscapes labelTrainIds .* where labelIds"):
        val[by_name[planted["train_ids_as_label_ids"]]]


def test_study_config_with_include_is_read_like_the_cli(clean, capsys):
    """configs/dl1.yaml has no data: block of its own: it includes base/study.yaml."""
    study = Path(__file__).resolve().parents[2] / "configs" / "dl1.yaml"
    main(["check-data", "--config", str(study), "--data.init_args.root", str(clean),
          "--no_full", "--workers", "1"])  # fmt: skip
    assert "no problems" in capsys.readouterr().out


def test_reads_every_config_as_fit_does(clean, tmp_path, capsys):
    """Several --config merge as in `aspp-seg fit`: the second file's root is checked
    (the earlier reader took the last file alone, without configs/dl1.yaml's include)."""
    from aspp_seg.cli.config import read_config

    repo = Path(__file__).resolve().parents[2]
    second = tmp_path / "root.yaml"
    second.write_text(yaml.safe_dump({"data": {"init_args": {"root": str(clean)}}}))
    args = ["--config", str(repo / "configs" / "dl1.yaml"), "--config", str(second)]
    fit = read_config(args)
    assert fit.data.init_args.root == str(clean)
    assert tuple(fit.data.init_args.crop_size) == (513, 513)  # dl1's include still applies
    main(["check-data", *args, "--workers", "1"])
    out = capsys.readouterr().out
    assert f"CityscapesDataModule at {clean}" in out
    assert "no problems: 12 image/label pairs" in out
