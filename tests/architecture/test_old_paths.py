"""Run folders and configs written before the package was layered (0.1: ``aspp_seg.losses``,
``aspp_seg.callbacks``, ...) still load: the old module paths import as the new modules,
with one warning line that names the new path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import pytest
import yaml

import aspp_seg
from aspp_seg import MOVED
from aspp_seg.cli.main import main

OLD_PATHS = {  # class paths as 0.1 wrote them into run configs
    "aspp_seg.training.losses.": "aspp_seg.losses.",
    "aspp_seg.training.schedules.": "aspp_seg.schedules.",
    "aspp_seg.training.callbacks.": "aspp_seg.callbacks.",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_path_is_the_new_module(old):
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({MOVED[old]!r})\n"
        "assert old is new, (old, new)\n"
        "print(w[0].message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == (
        f"{old} moved to {MOVED[old]} (aspp-seg 0.2): update the class paths in your config"
    )


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
