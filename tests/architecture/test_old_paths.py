"""Run folders and configs written before the package was layered (0.1: ``aspp_seg.losses``,
``aspp_seg.callbacks``, ...) still load: the old module paths import as the new modules,
with one warning line that names the new path."""

from __future__ import annotations

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
