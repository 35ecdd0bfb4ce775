"""Resumable training: a real CPU training process is killed part-way (SIGKILL), then
``aspp-seg fit ... --ckpt_path last`` finishes it; the result must match an
uninterrupted run step for step."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers import demo_args

MAX_EPOCHS = 4  # 16 train frames / batch 4 = 4 steps per epoch: 16 steps in all

# Checkpoint every 2 training steps (mid-epoch too), so that a kill loses little.
CALLBACKS = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 2, save_last: true, save_top_k: 0}
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {logging_interval: step}
"""


def _fit_command(root: Path, extra: Path, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "aspp_seg.cli", "fit",
        *demo_args(root, "--trainer.max_epochs", str(MAX_EPOCHS),
                   "--trainer.log_every_n_steps", "1", "--trainer.limit_val_batches", "1",
                   "--trainer.num_sanity_val_steps", "0", *more, configs=[extra]),
    ]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _lr_per_step(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as f:
        rows = [(int(r["step"]), float(r["lr-SGD"])) for r in csv.DictReader(f) if r.get("lr-SGD")]
    steps = [step for step, _ in rows]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return dict(rows)


def _state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {
        "global_step": state["global_step"],
        "epoch": state["epoch"],
        "lr": state["optimizer_states"][0]["param_groups"][0]["lr"],
        "scheduler_epoch": state["lr_schedulers"][0]["last_epoch"],
    }


def test_killed_run_resumes_to_the_same_step_and_lr(tiny_cityscapes, tmp_path):
    extra = tmp_path / "checkpoint_often.yaml"
    extra.write_text(CALLBACKS)

    whole = tmp_path / "whole"
    whole.mkdir()
    subprocess.run(_fit_command(tiny_cityscapes, extra), cwd=whole, env=_env(), check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    reference = whole / "runs" / "demo" / "version_0"

    killed = tmp_path / "killed"
    killed.mkdir()
    run = killed / "runs" / "demo" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(_fit_command(tiny_cityscapes, extra), cwd=killed, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # let the checkpoint file be written completely
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL, "training ended before the kill"
    finally:
        if process.poll() is None:
            process.kill()
    interrupted = _state(last)
    total_steps = MAX_EPOCHS * 4
    assert 0 < interrupted["global_step"] < total_steps

    result = subprocess.run(_fit_command(tiny_cityscapes, extra, "--ckpt_path", "last"),
                            cwd=killed, env=_env(), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {Path('runs/demo/version_0/checkpoints/last.ckpt')}" in (
        result.stdout + result.stderr
    )
    assert not (killed / "runs" / "demo" / "version_1").exists()  # same folder, not a new one

    resumed, expected = _state(last), _state(reference / "checkpoints" / "last.ckpt")
    assert resumed == expected
    assert expected["global_step"] == total_steps
    # The LR schedule continued from where it was killed: the same LR at every step.
    lr_resumed, lr_whole = _lr_per_step(run), _lr_per_step(reference)
    assert sorted(lr_resumed) == sorted(lr_whole) == list(range(total_steps))
    for step, lr in lr_whole.items():
        assert abs(lr_resumed[step] - lr) < 1e-12, step
    base = 0.05  # demo.yaml's SGD learning rate, poly decay with power 0.9 per step
    assert abs(lr_whole[5] - base * (1 - 5 / total_steps) ** 0.9) < 1e-9


def test_last_without_a_checkpoint_starts_from_scratch(tmp_path):
    from jsonargparse import Namespace

    from aspp_seg.training.resume import resolve_last

    cfg = Namespace(
        ckpt_path="last",
        trainer=Namespace(
            logger=Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=str(tmp_path / "runs"), name="x"),
            ),
            callbacks=[],
        ),
    )
    assert resolve_last(cfg) is None
    assert cfg.ckpt_path is None  # a new run (one line says so), without Lightning's warning


def _logger(kind: str, **init_args):
    from jsonargparse import Namespace

    class_path = f"lightning.pytorch.loggers.{kind}"
    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def _config(loggers, ckpt_path="last"):
    from jsonargparse import Namespace

    return Namespace(ckpt_path=ckpt_path, trainer=Namespace(logger=loggers, callbacks=[]))


def _checkpoint(path: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": 7, "epoch": 1, "state_dict": {}, **extra}, path)
    return path


def test_last_continues_the_version_folder_and_the_wandb_run(tmp_path):
    from aspp_seg.evaluation.checkpoints import CHECKPOINT_KEY
    from aspp_seg.training.resume import resolve_last

    runs = tmp_path / "runs"
    _checkpoint(runs / "dl1" / "version_0" / "checkpoints" / "last.ckpt")
    newest = _checkpoint(runs / "dl1" / "version_3" / "checkpoints" / "last.ckpt",
                         **{CHECKPOINT_KEY: {"wandb_id": "abc123"}})  # fmt: skip
    cfg = _config([_logger("CSVLogger", save_dir=str(runs), name="dl1"),
                   _logger("WandbLogger", save_dir=str(runs), project="p")])  # fmt: skip
    assert resolve_last(cfg) == newest
    assert cfg.ckpt_path == str(newest)
    assert cfg.trainer.logger[0].init_args.version == 3
    assert cfg.trainer.logger[1].init_args.id == "abc123"

    # W&B as the only logger: its checkpoints live in <save_dir>/<project>/<run id>/
    run = _checkpoint(runs / "p" / "x7y8" / "checkpoints" / "last.ckpt")
    cfg = _config(_logger("WandbLogger", save_dir=str(runs), project="p"))
    assert resolve_last(cfg) == run and cfg.trainer.logger.init_args.id == "x7y8"

    # validate / test: only the path; the loggers keep their new version
    cfg = _config(_logger("CSVLogger", save_dir=str(runs), name="dl1"))
    assert resolve_last(cfg, continue_run=False) == newest
    assert cfg.trainer.logger.init_args.get("version") is None

    # best: the one the newest run recorded, found beside its last.ckpt
    best = _checkpoint(runs / "dl1" / "version_3" / "checkpoints" / "best-epoch=01.ckpt")
    ckpt_state = {"best_model_path": "/elsewhere/best-epoch=01.ckpt"}
    torch.save({"global_step": 7, "state_dict": {}, "callbacks": {"ModelCheckpoint{}": ckpt_state},
                "aspp_seg": {"wandb_id": "abc123"}}, newest)  # fmt: skip
    cfg = _config(_logger("CSVLogger", save_dir=str(runs), name="dl1"), ckpt_path="best")
    assert resolve_last(cfg, continue_run=False) == best and cfg.ckpt_path == str(best)
