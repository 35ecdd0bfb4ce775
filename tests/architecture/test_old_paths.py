"""Run folders and configs written before the package was layered (0.1: ``aspp_seg.losses``,
``aspp_seg.callbacks``, ...) still load: the old module paths import as the new modules,
with one warning line that names the new path."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import warnings

import yaml

import aspp_seg
from aspp_seg import MOVED
from aspp_seg.cli.main import main

OLD_PATHS = {  # class paths as 0.1 wrote them into run configs
    "aspp_seg.training.losses.": "aspp_seg.losses.",
    "aspp_seg.training.schedules.": "aspp_seg.schedules.",
    "aspp_seg.training.callbacks.": "aspp_seg.callbacks.",
}


def test_every_old_module_path_is_the_new_module():
    """In a fresh process (nothing imported yet), each 0.1 path imports as its new module
    and warns once, naming the new path."""
    code = (
        "import importlib, json, sys, warnings\n"
        "from aspp_seg import MOVED\n"
        "out = {}\n"
        "for old, new in MOVED.items():\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    same = module is importlib.import_module(new)\n"
        "    out[old] = [same, [str(w.message) for w in caught if w.category is FutureWarning]]\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(found) == sorted(MOVED)
    for old, (same, messages) in found.items():
        assert same, f"{old} is not the module {MOVED[old]}"
        line = f"{old} moved to {MOVED[old]} (aspp-seg 0.2): update the class paths in your config"
        assert messages == [line]


def _old_run(tiny_checkpoint, tmp_path):
    """A copy of a run whose config.yaml names classes by their 0.1 paths."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent.parent, run)
    config = (run / "config.yaml").read_text()
    config = config.replace(  # name the loss, as most shipped configs do
        "  loss: null\n", "  loss:\n    class_path: aspp_seg.training.losses.CrossEntropyLoss\n"
    )
    for new, old in OLD_PATHS.items():
        config = config.replace(new, old)
    assert "aspp_seg.losses.CrossEntropyLoss" in config
    assert "aspp_seg.callbacks.ResultFiles" in config
    (run / "config.yaml").write_text(config)
    return run


def test_a_run_folder_of_the_old_layout_loads_and_validates(
    tiny_checkpoint, tiny_cityscapes, tmp_path, monkeypatch
):
    run = _old_run(tiny_checkpoint, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = aspp_seg.load_model(run)
    assert not model.net.training
    checkpoint = next((run / "checkpoints").glob("*.ckpt"))
    monkeypatch.chdir(tmp_path)
    main(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(checkpoint),
          "--data.init_args.root", str(tiny_cityscapes), "--data.init_args.num_workers", "0",
          "--trainer.limit_val_batches", "1.0",
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    assert sorted(tmp_path.rglob("val_iou.md")), "validate wrote no per-class table"
    saved = yaml.safe_load((run / "config.yaml").read_text())  # left as the user wrote it
    assert saved["model"]["loss"]["class_path"].startswith("aspp_seg.losses.")


MOVED_NAMES = {  # 0.1 paths of data-set names -> where they live now (one file per data set)
    "aspp_seg.data.labels.CITYSCAPES_CLASSES": "aspp_seg.data.datasets.cityscapes.CLASSES",
    "aspp_seg.data.labels.CITYSCAPES_PALETTE": "aspp_seg.data.datasets.cityscapes.PALETTE",
    "aspp_seg.data.labels.TABLE1_COLUMNS": "aspp_seg.data.datasets.cityscapes.COLUMNS",
    "aspp_seg.data.labels.CITYSCAPES_LABEL_IDS": "aspp_seg.data.datasets.cityscapes.LABEL_IDS",
    "aspp_seg.data.labels.to_train_ids": "aspp_seg.data.datasets.cityscapes.to_train_ids",
    "aspp_seg.data.labels.CAMVID_CLASSES": "aspp_seg.data.datasets.camvid.CLASSES",
    "aspp_seg.data.labels.CAMVID_ENCODING": "aspp_seg.data.datasets.camvid.ENCODING",
    "aspp_seg.data.datamodules.CamVidDataModule": "aspp_seg.data.CamVidDataModule",
    "aspp_seg.data.datamodules.CityscapesDataModule": "aspp_seg.data.CityscapesDataModule",
    "aspp_seg.data.datamodules.DemoDataModule": "aspp_seg.data.DemoDataModule",
    "aspp_seg.data.datamodules.FolderDataModule": "aspp_seg.data.FolderDataModule",
}


def _lookup(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_old_paths_of_data_set_names_still_import_and_warn():
    """Class tables and data modules moved into one file per data set; their 0.1 paths
    give the same objects, with a DeprecationWarning naming the new path."""
    for old, new in MOVED_NAMES.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = _lookup(old)
        assert value is _lookup(new), old
        messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
        assert len(messages) == 1 and messages[0].startswith(f"{old} moved to "), old
        assert caught[0].filename == __file__  # points at the line that used the old path
    from aspp_seg.data.labels import IGNORE_INDEX, LabelEncoding  # the generic names stay

    assert IGNORE_INDEX == 255 and LabelEncoding.indices("x", 2).valid.sum() == 2
