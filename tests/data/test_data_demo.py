"""The demo data set: never written into a foreign folder, regenerated when its
generator settings change (only its own files)."""

from __future__ import annotations

from pathlib import Path

import torch

from aspp_seg.cli.main import main
from aspp_seg.data import DemoDataModule
from aspp_seg.data.datasets.demo import MARKER, generate_demo_cityscapes, generated_settings

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")
SMALL = {"num_val": 2, "height": 32, "width": 64, "seed": 0}


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_other_num_train_regenerates_and_fit_sees_the_new_count(tmp_path, monkeypatch, capsys):
    root = generate_demo_cityscapes(tmp_path / "demo", num_train=4, **SMALL)
    (root / "notes.txt").write_text("mine\n")  # not the generator's: kept
    assert generated_settings(root)["num_train"] == 4
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", DEMO, "--data.init_args.root", str(root),
          "--data.init_args.num_train", "6", "--data.init_args.num_val", "2",
          "--data.init_args.height", "32", "--data.init_args.width", "64",
          "--data.init_args.seed", "0", "--data.init_args.batch_size", "2",
          "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.channels", "16",
          "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
          "--trainer.logger", "false", "--trainer.callbacks", "[]",
          "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    out = capsys.readouterr().out
    assert f"regenerating the demo data set in {root}" in out and "num_train=6" in out
    assert generated_settings(root)["num_train"] == 6
    assert len(list((root / "leftImg8bit" / "train").rglob("*.png"))) == 6
    assert (root / "notes.txt").read_text() == "mine\n"
    checkpoint = next((tmp_path / "run").rglob("*.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3  # 6 frames / 2


def test_unset_settings_keep_the_existing_set(tmp_path, capsys):
    root = generate_demo_cityscapes(tmp_path / "demo", num_train=4, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    dm = DemoDataModule(str(root), num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert "generat" not in capsys.readouterr().out


def test_set_from_an_older_version_counts_as_differing(tmp_path, capsys):
    root = generate_demo_cityscapes(tmp_path / "demo", num_train=4, **SMALL)
    (root / MARKER).write_text("aspp-seg synthetic demo data\n")  # the old plain marker
    dm = DemoDataModule(str(root), num_train=4, num_workers=0, **SMALL)  # the same values
    dm.prepare_data()
    assert "unrecorded settings" in capsys.readouterr().out
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4
    assert generated_settings(root) == {**SMALL, "num_train": 4, "num_test": 0}


def test_non_empty_foreign_folder_is_refused_untouched(tmp_path, run_cli):
    foreign = tmp_path / "camvid"
    for name in ("train/0001.png", "trainannot/0001.png", "README"):
        (foreign / name).parent.mkdir(parents=True, exist_ok=True)
        (foreign / name).write_bytes(b"x")
    before = _files(foreign)
    result = run_cli("fit", "--config", DEMO, "--data.init_args.root", str(foreign), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("aspp-seg: error: ") and str(foreign) in last
    assert _files(foreign) == before
