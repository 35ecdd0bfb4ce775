"""The `aspp-seg` command end to end, on a tiny synthetic Cityscapes tree."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import demo_args, imported_packages

from aspp_seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def _tiny_args(root: Path) -> list[str]:
    return demo_args(root, "--trainer.log_every_n_steps", "1")


def test_fit_with_progress_bar_ends_with_the_iou_table(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*_tiny_args(tiny_cityscapes), "--trainer.max_epochs", "1", "--trainer.logger", "false"]
    args[args.index("--trainer.enable_progress_bar") + 1] = "true"  # as users run it
    result = _cli("fit", *args, "--trainer.callbacks", "[]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val per-class IoU (%):" in result.stdout
    assert "| Road | Sidewalk |" in result.stdout


def _iou_row(path: Path) -> dict:
    with path.open() as f:
        return next(csv.DictReader(f))


def test_fit_then_validate_gives_the_same_miou(tiny_cityscapes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", *_tiny_args(tiny_cityscapes), "--trainer.max_epochs", "2"])
    run = tmp_path / "runs" / "demo" / "version_0"
    assert (run / "config.yaml").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
    # Settings for how to run (not what was trained) stay out of the checkpoint, so that
    # LightningCLI cannot apply them over the command line of a later --ckpt_path run.
    hparams = torch.load(last, weights_only=True)["hyper_parameters"]
    assert not set(hparams) & {"inference", "lr_scaling", "predict_dir"}
    fit_row = _iou_row(run / "val_iou.csv")
    assert 0.0 <= float(fit_row["mIoU"]) <= 100.0
    with (run / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))
    assert any(row.get("train/loss") for row in logged)
    assert any(row.get("val/mIoU") for row in logged)

    capsys.readouterr()
    main(["validate", *_tiny_args(tiny_cityscapes), "--ckpt_path", str(last)])
    out = capsys.readouterr()
    assert "| Road | Sidewalk |" in out.out + out.err
    # written beside the checkpoint, not into a new version folder
    validate_row = _iou_row(run / "validate" / "last" / "val_iou.csv")
    assert not (tmp_path / "runs" / "demo" / "version_1").exists()
    assert validate_row == fit_row


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aspp_seg.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aspp-seg: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]


def test_missing_cityscapes_root_is_one_line(tmp_path, run_cli):
    missing = tmp_path / "nowhere"
    result = run_cli("fit", "--config", str(REPO / "configs" / "dl1.yaml"),
                  "--data.init_args.root", str(missing), cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(result, str(missing), "leftImg8bit/train/<city>/")


def test_image_without_label_is_named(tiny_cityscapes, tmp_path, run_cli):
    root = tmp_path / "cs"
    shutil.copytree(tiny_cityscapes, root)
    label = next((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    label.unlink()
    image_name = label.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
    result = run_cli("fit", "--config", str(REPO / "configs" / "dl1.yaml"),
                  "--data.init_args.root", str(root), cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(result, image_name, label.name)


def test_unknown_config_key_is_reported(tmp_path, run_cli):
    result = run_cli("fit", "--config", str(REPO / "configs" / "demo.yaml"),
                  "--model.net.init_args.ratez", "[1]", cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "ratez" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_subcommands(tmp_path):
    result = _cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in result.stdout


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # in-process: a subprocess per file costs seconds each
    # an overlay (experiments.table1 --overlay) is layered over a config, as it runs
    base = (
        ["--config", str(REPO / "configs" / "dl1.yaml")] if config.parent.name == "overlay" else []
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *base, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert "class_path" in capsys.readouterr().out


def test_the_command_table_lists_lightnings_subcommands_and_every_command_module(tmp_path):
    """`aspp-seg --help` answers without Lightning, from one table: LightningCLI's
    subcommands as Lightning describes them, and one entry per module of
    `aspp_seg.cli.commands`, each with a ``main``."""
    import importlib

    from lightning.pytorch import Trainer
    from lightning.pytorch.cli import LightningCLI, _get_short_description

    from aspp_seg.cli.main import COMMANDS, LIGHTNING

    lightning = {name: text for name, (module, text) in COMMANDS.items() if module == LIGHTNING}
    assert list(lightning) == list(LightningCLI.subcommands())
    for name, text in lightning.items():
        assert _get_short_description(getattr(Trainer, name)).startswith(text)
    files = REPO / "aspp_seg" / "cli" / "commands"
    modules = {f"aspp_seg.cli.commands.{p.stem}" for p in files.glob("*.py")} - {
        "aspp_seg.cli.commands.__init__"
    }
    assert {module for module, _ in COMMANDS.values()} - {LIGHTNING} == modules
    for module in modules:
        assert callable(importlib.import_module(module).main), module


def test_startup_imports_no_lightning():
    """The entry point and the non-training commands' --help stay light."""
    code = (
        "from aspp_seg.cli.main import main\n"
        "for argv in (['--help'], ['summary', '--help'], ['export', '--help'],\n"
        "             ['check-data', '--help'], ['cache', '--help']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
    )
    assert not imported_packages(code) & {"torch", "lightning"}
