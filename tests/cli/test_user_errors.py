"""A user's mistake with a checkpoint is one line ``aspp-seg: error: ...`` naming the
file, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aspp_seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


def _run(capfd, *args: str) -> str:
    """Runs the CLI in this process; returns its last stderr line after exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def _data(root: Path) -> list[str]:
    return ["--data.init_args.root", str(root), "--data.init_args.num_workers", "0",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]  # fmt: skip


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_missing_checkpoint(tiny_cityscapes, tmp_path, monkeypatch, capfd, subcommand):
    monkeypatch.chdir(tmp_path)
    line = _run(capfd, subcommand, "--config", DEMO, *_data(tiny_cityscapes),
                "--ckpt_path", "/no/such.ckpt")  # fmt: skip
    assert line == "aspp-seg: error: --ckpt_path /no/such.ckpt: no such file"


def test_a_file_that_is_not_a_checkpoint(tiny_cityscapes, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint\n")
    line = _run(capfd, "validate", "--config", DEMO, *_data(tiny_cityscapes),
                "--ckpt_path", str(bogus))  # fmt: skip
    assert line.startswith(f"aspp-seg: error: --ckpt_path {bogus} is not a PyTorch checkpoint")


def test_a_checkpoint_of_another_architecture(tiny_cityscapes, tmp_path, monkeypatch, capfd):
    """A DL-3-like run (4x4 kernels, rates 8/16/24) validated with demo.yaml's DL-1 head."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", DEMO, "--data.init_args.root", str(tiny_cityscapes),
          "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.kernel_size", "4",
          "--model.net.init_args.aspp.init_args.rates", "[8, 16, 24]",
          "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    run = tmp_path / "runs" / "demo" / "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"
    capfd.readouterr()
    line = _run(capfd, "validate", "--config", DEMO, *_data(tiny_cityscapes),
                "--ckpt_path", str(checkpoint))  # fmt: skip
    assert line.startswith(f"aspp-seg: error: checkpoint {checkpoint} does not fit the config: ")
    assert "net.head.aspp.branches.1.0.weight is [64, 512, 4, 4] in the checkpoint" in line
    assert "[64, 512, 3, 3] in the configured model" in line
    assert line.endswith(f"its run's config would fit: --config {(run / 'config.yaml').resolve()}")
    # ... and that config does fit
    main(["validate", "--config", str(run / "config.yaml"), *_data(tiny_cityscapes),
          "--ckpt_path", str(checkpoint)])  # fmt: skip


def test_missing_checkpoint_from_a_shell():
    """The same through the console script: no traceback from any layer."""
    result = subprocess.run(
        [sys.executable, "-m", "aspp_seg.cli", "validate", "--config", DEMO,
         "--ckpt_path", "/no/such.ckpt"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "aspp-seg: error: --ckpt_path /no/such.ckpt: no such file"
    )


def test_evaluating_in_a_run_folder_keeps_its_config(tiny_cityscapes, tiny_checkpoint, capfd):
    """``validate`` with no logger writes into default_root_dir; the training run's
    config.yaml there stays the one that trained it."""
    run = tiny_checkpoint.parent.parent
    config = run / "config.yaml"
    before = config.read_text()
    main(["validate", "--config", str(config), "--data.init_args.root", str(tiny_cityscapes),
          "--trainer.limit_val_batches", "1", "--ckpt_path", str(tiny_checkpoint)])  # fmt: skip
    assert config.read_text() == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fit", "--config", DEMO, "--trainer.nosuch", "1"],
         "unrecognized arguments: --trainer.nosuch 1 (aspp-seg fit --help lists the settings)"),
        (["validate", "--config", DEMO, "--model.net.init_args.nosuch=1"],
         "Option 'nosuch' is not accepted (aspp-seg validate --help lists the settings)"),
        (["fit", "--config", DEMO, "--trainer.max_epochs", "many"],
         'Parser key "trainer.max_epochs"'),
        (["fit", "--config", "BROKEN"], "config BROKEN: Problems parsing config"),
        (["nosuch"], "no subcommand 'nosuch'; aspp-seg has fit, validate, test, predict, "),
    ],
)  # fmt: skip
def test_a_setting_that_does_not_parse_is_one_line(args, expected, tmp_path, capfd):
    """An unknown key, a wrong type, broken YAML, a mistyped subcommand: one line naming
    it and exit status 2, not jsonargparse's usage screen."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [1, 2\n")
    line = _run(capfd, *[str(broken) if arg == "BROKEN" else arg for arg in args])
    assert line.startswith("aspp-seg: error: ")
    assert expected.replace("BROKEN", str(broken)) in line
    assert "usage:" not in capfd.readouterr().err


def _ctrl_c():
    raise KeyboardInterrupt


def _ctrl_c_while_writing():  # what torch.save raises when Ctrl-C lands in its file
    try:
        _ctrl_c()
    finally:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")


def _ctrl_c_wrapped():
    try:
        _ctrl_c()
    except KeyboardInterrupt as error:
        raise RuntimeError("a library's own error") from error


@pytest.mark.parametrize("command", [_ctrl_c, _ctrl_c_while_writing, _ctrl_c_wrapped])
def test_ctrl_c_is_one_line_and_130_also_when_a_library_rewraps_it(command, monkeypatch, capfd):
    monkeypatch.setattr("aspp_seg.cli.main._run", lambda args: command())
    with pytest.raises(SystemExit) as exit_:
        main(["fit"])
    assert exit_.value.code == 130
    assert capfd.readouterr().err.strip() == "aspp-seg: error: interrupted"
