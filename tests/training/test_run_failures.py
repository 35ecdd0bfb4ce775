"""No silent wrong result, no lost file: every failure below is seen through the command
line as a user sees it: exit status, no traceback, the last stderr line
``aspp-seg: error: ...`` naming the step, file or setting at fault."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import demo_args
from PIL import Image
from torch import nn

from aspp_seg.cli.main import main
from aspp_seg.training.callbacks.run_guard import RunGuard, first_non_finite

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


class NanAfter(nn.Module):
    """Cross-entropy that turns NaN after `finite_steps` calls: a run that diverges at a
    known step (a real one with a huge LR diverges before its first checkpoint)."""

    def __init__(self, *, finite_steps: int = 4) -> None:
        super().__init__()
        self.finite_steps = finite_steps
        self.calls = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = F.cross_entropy(logits, target.long(), ignore_index=255)
        return loss if self.calls <= self.finite_steps else loss * float("nan")


def _run(capfd, *args: str, code: int = 0) -> tuple[str, str]:
    """Runs the CLI in this process; returns (stdout, last stderr line) after checking the
    exit status and that no traceback was printed."""
    if code == 0:
        main(list(args))
    else:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        assert exit_info.value.code == code
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    return out, lines[-1] if lines else ""


def _tiny(root: Path, work: Path, *more: str) -> list[str]:
    """The demo config on the 16 + 8 frame set: 4 steps an epoch, one validation batch."""
    return demo_args(root, "--trainer.limit_val_batches", "1",
                     "--trainer.logger.init_args.save_dir", str(work / "runs"), *more)  # fmt: skip


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_cityscapes, tmp_path_factory) -> Path:
    """A run folder of one demo epoch (4 steps): last.ckpt and best-epoch=00.ckpt."""
    work = tmp_path_factory.mktemp("trained")
    main(["fit", *_tiny(tiny_cityscapes, work, "--trainer.max_epochs", "1")])
    return work / "runs" / "demo" / "version_0"


def _copy_run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run under tmp_path/runs/demo/version_0 (same layout)."""
    run = tmp_path / "runs" / "demo" / "version_0"
    shutil.copytree(trained, run)
    return run


# 1. divergence


def test_a_diverging_run_stops_at_the_step_and_keeps_the_last_finite_checkpoint(
    tiny_cityscapes, tmp_path, capfd
):
    loss = ["--model.loss", f"{__name__}.NanAfter", "--model.loss.init_args.finite_steps", "6"]
    _, line = _run(capfd, "fit", *_tiny(tiny_cityscapes, tmp_path, *loss,
                                        "--trainer.max_epochs", "3"), code=1)  # fmt: skip
    last = tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    assert line == (
        "aspp-seg: error: training diverged: the loss is nan at step 7 (epoch 1); the "
        f"newest checkpoint, {last} (step 4), holds finite weights; lower the learning "
        "rate (model.optimizer.init_args.lr) or check the data"
    )
    for path in (tmp_path / "runs").rglob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["global_step"] == 4 and first_non_finite(state) is None, path


def test_a_huge_learning_rate_fails_before_any_checkpoint(tiny_cityscapes, tmp_path, capfd):
    huge = ["--model.optimizer.init_args.lr", "1e6"]
    _, line = _run(capfd, "fit", *_tiny(tiny_cityscapes, tmp_path, *huge), code=1)
    assert line.startswith("aspp-seg: error: training diverged: the loss is ")
    assert "no checkpoint was written" in line
    assert not list(tmp_path.rglob("*.ckpt"))


def test_first_non_finite_names_the_tensor():
    state = {"state_dict": {"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])},
             "optimizer_states": [{"state": {0: {"momentum_buffer": torch.zeros(3)}}}],
             "callbacks": {"ModelCheckpoint": {"kth_value": torch.tensor(float("inf"))}},
             "global_step": 3}  # fmt: skip
    assert first_non_finite(state) == "state_dict/b"
    state["state_dict"]["b"] = torch.zeros(2)
    assert first_non_finite(state) is None  # callbacks may hold inf (ModelCheckpoint's start)
    state["optimizer_states"][0]["state"][0]["momentum_buffer"][1] = float("nan")
    assert first_non_finite(state) == "optimizer_states/0/state/0/momentum_buffer"


# 2. a checkpoint asked for is a checkpoint loaded


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
@pytest.mark.parametrize("which", ["last", "best"])
def test_last_or_best_that_finds_nothing(tiny_cityscapes, tmp_path, capfd, subcommand, which):
    _, line = _run(capfd, subcommand, *_tiny(tiny_cityscapes, tmp_path),
                   "--ckpt_path", which, code=2)  # fmt: skip
    assert line.startswith(f"aspp-seg: error: --ckpt_path {which}: no ")
    assert str(tmp_path / "runs" / "demo" / "*" / "checkpoints" / "last*.ckpt") in line
    assert not (tmp_path / "runs").exists()


def test_export_of_last_needs_the_config_and_a_checkpoint(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, line = _run(capfd, "export", "--ckpt_path", "last", code=2)
    assert line.startswith("aspp-seg: error: export --ckpt_path last: give --config")
    _, line = _run(capfd, "export", "--ckpt_path", "best", "--config", DEMO, code=2)
    assert line.startswith("aspp-seg: error: --ckpt_path best: no best checkpoint")


def test_fit_last_with_nothing_to_resume_starts_and_says_so(
    tiny_cityscapes, tmp_path, capfd, caplog
):
    main(["fit", *_tiny(tiny_cityscapes, tmp_path, "--trainer.max_steps", "1"),
          "--ckpt_path", "last"])  # fmt: skip
    err = capfd.readouterr().err + caplog.text  # Lightning's info lines go through logging
    pattern = tmp_path / "runs" / "demo" / "*" / "checkpoints" / "last*.ckpt"
    assert f"--ckpt_path last: no {pattern} yet, starting a new run" in err
    assert "No checkpoint will be loaded" not in err  # Lightning's warning: resolved before
    assert (tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt").is_file()


# 3. no empty runs


def test_a_fit_without_training_batches_is_refused_before_anything(
    tmp_path, capfd, tiny_cityscapes
):
    three = ["--data.init_args.batch_size", "8", "--trainer.devices", "3"]
    _, line = _run(capfd, "fit", *_tiny(tiny_cityscapes, tmp_path), *three, code=2)
    assert line == (
        "aspp-seg: error: fit would train nothing: 16 training frames over 3 processes (6 "
        "each) make no full batch of data.batch_size=8 (an incomplete last batch is "
        "dropped); set data.batch_size <= 6 or fewer devices"
    )
    _, line = _run(capfd, "fit", *_tiny(tiny_cityscapes, tmp_path),
                   "--data.init_args.batch_size", "32", code=2)  # fmt: skip
    assert line.endswith(
        "16 training frames make no full batch of data.batch_size=32 (an incomplete last "
        "batch is dropped); set data.batch_size <= 16"
    )
    # a demo set still to be generated: refused from its settings, nothing generated
    fresh = tmp_path / "fresh_demo"
    _, line = _run(capfd, "fit", *_tiny(fresh, tmp_path), "--data.init_args.num_train", "3",
                   code=2)  # fmt: skip
    assert "3 training frames make no full batch of data.batch_size=4" in line
    assert not fresh.exists() and not (tmp_path / "runs").exists()


# 4. class weights from the data the run trains on


def _weights_of(run: Path) -> list[float]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return config["model"]["loss"]["init_args"]["weight"]


def test_class_weights_come_from_the_generated_and_regenerated_demo(tmp_path, capfd):
    from aspp_seg.data.datasets.cityscapes import scan_split
    from aspp_seg.training.callbacks.class_weights import label_histogram
    from aspp_seg.training.losses import class_weights

    root = tmp_path / "demo"
    args = [*_tiny(root, tmp_path, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"),
            "--data.init_args.num_train", "4", "--data.init_args.num_val", "1",
            "--data.init_args.height", "32", "--data.init_args.width", "64",
            "--model.loss", "aspp_seg.training.losses.CrossEntropyLoss",
            "--model.loss.init_args.weight", "inverse_sqrt"]  # fmt: skip
    runs = tmp_path / "runs" / "demo"
    computed = []
    for version, seed in enumerate(("1", "2")):  # the second regenerates the set
        main(["fit", *args, "--data.init_args.seed", seed])
        samples = scan_split(root, "train").raise_first()
        expected = class_weights(label_histogram(samples, 19), "inverse_sqrt")
        got = _weights_of(runs / f"version_{version}")
        np.testing.assert_allclose(got, expected, atol=1e-6)
        computed.append(got)
    capfd.readouterr()
    assert computed[0] != computed[1]


# 5. one line from a data worker; Ctrl-C


def test_a_label_error_in_a_data_worker_is_one_line(tiny_cityscapes, tmp_path, capfd):
    root = tmp_path / "data"
    shutil.copytree(tiny_cityscapes, root)
    labels = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))
    bad = labels[-1]  # not the first: setup reads that one in the main process
    Image.fromarray(np.full((64, 128), 100, np.uint8)).save(bad)
    _, line = _run(capfd, "fit", *_tiny(root, tmp_path, "--data.init_args.num_workers", "2",
                                        "--trainer.max_epochs", "1"), code=2)  # fmt: skip
    assert line.startswith("aspp-seg: error: ") and str(bad) in line
    assert "DataLoader worker" not in line and "Error: " not in line


def test_ctrl_c_during_fit_with_workers_is_one_line_and_exit_130(tiny_cityscapes, tmp_path):
    args = _tiny(tiny_cityscapes, tmp_path, "--data.init_args.num_workers", "2",
                 "--trainer.max_epochs", "1000")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "aspp_seg.cli", "fit", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    last = tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert line.startswith("aspp-seg: error: interrupted at step ")
    assert f"the newest checkpoint is {last} (step " in line
    assert line.endswith("run the same command with --ckpt_path last to resume from it")


# 6. tracebacks for user mistakes


def test_a_damaged_last_checkpoint_is_named_when_resumed(trained, tiny_cityscapes, tmp_path, capfd):
    run = _copy_run(trained, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    before = _files(tmp_path)
    _, line = _run(capfd, "fit", *_tiny(tiny_cityscapes, tmp_path), "--ckpt_path", "last",
                   code=2)  # fmt: skip
    assert line.startswith(f"aspp-seg: error: --ckpt_path {last} is not a PyTorch checkpoint")
    assert _files(tmp_path) == before


# 7. evaluation outputs beside their checkpoint


def test_evaluations_write_beside_the_checkpoint(trained, tiny_cityscapes, tmp_path, capfd):
    run = _copy_run(trained, tmp_path)
    base = _tiny(tiny_cityscapes, tmp_path)
    main(["validate", *base, "--ckpt_path", "last"])
    main(["test", *base, "--ckpt_path", "best"])
    main(["predict", *base, "--ckpt_path", "last"])
    capfd.readouterr()
    best = next((run / "checkpoints").glob("best*.ckpt")).stem
    assert (run / "validate" / "last" / "val_iou.md").is_file()
    assert (run / "validate" / "last" / "config.yaml").is_file()
    assert (run / "test" / best / "test_iou.md").is_file()
    assert len(list((run / "predict" / "last" / "trainIds").glob("*.png"))) == 8
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # no new version
    assert (run / "config.yaml").read_bytes() == (trained / "config.yaml").read_bytes()


# 10. a command that fails leaves the files it found as they were


def test_a_failing_resume_and_a_failing_predict_leave_the_run_folder_as_it_was(
    trained, tiny_cityscapes, tmp_path, capfd
):
    run = _copy_run(trained, tmp_path)
    before = _files(run)
    diverge = ["--model.loss", f"{__name__}.NanAfter", "--model.loss.init_args.finite_steps", "0"]
    diverge += ["--resume_with_changed_settings", "true"]  # another loss than the run's
    _, line = _run(capfd, "fit", *_tiny(tiny_cityscapes, tmp_path, *diverge,
                   "--trainer.max_epochs", "3"), "--ckpt_path", "last", code=1)  # fmt: skip
    assert "training diverged: the loss is nan at step 5 (epoch 1)" in line
    assert _files(run) == before

    source = tmp_path / "photos"
    source.mkdir()
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(source / "a.png")
    (source / "b.png").write_text("not an image\n")
    _, line = _run(capfd, "predict", *_tiny(tiny_cityscapes, tmp_path), "--ckpt_path", "last",
                   "--data.init_args.predict_source", str(source), code=2)  # fmt: skip
    assert str(source / "b.png") in line
    assert _files(run) == before
    assert not (run / "predict").exists()


# 9. a self-contained repository


def test_nothing_points_outside_the_repository():
    """A user's clone has neither the team's ../shared folder nor its design notes."""
    files = [REPO / "README.md", *(REPO / "configs").rglob("*.yaml"),
             *(REPO / "aspp_seg").rglob("*.py"), *(REPO / "docs").rglob("*.md")]  # fmt: skip
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "shared/" in line or "DESIGN.md" in line
    ]
    assert not found


def test_a_ctrl_c_a_library_rewrapped_is_remembered_as_an_interruption():
    guard, trainer = RunGuard(), SimpleNamespace(global_step=7, current_epoch=1)
    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("unexpected pos")  # torch.save's answer to it
    except RuntimeError as error:
        guard.on_exception(trainer, None, error)
    assert guard.interrupted_at == (7, 1)
    bug = RunGuard()
    bug.on_exception(trainer, None, ValueError("a bug, not Ctrl-C"))
    assert bug.interrupted_at is None
