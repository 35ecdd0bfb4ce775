"""Extending a finished run (``--ckpt_path last`` with a larger ``max_epochs`` or
``max_steps``): the LR schedule is rebuilt for the new length, not left at 0."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from helpers import demo_args

from aspp_seg.cli.main import main

BASE_LR = 0.05  # demo.yaml's SGD learning rate; poly 0.9 per step
STEPS_PER_EPOCH = 4  # 16 training frames, batch 4


def _fit(root: Path, *more: str) -> None:
    main(["fit", *demo_args(root,
          "--data.init_args.num_train", "16", "--data.init_args.num_val", "8",
          "--data.init_args.height", "64", "--data.init_args.width", "128",
          "--data.init_args.seed", "1",
          "--trainer.log_every_n_steps", "1", "--trainer.limit_val_batches", "1",
          "--trainer.num_sanity_val_steps", "0", *more)])  # fmt: skip


def _lr_rows(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as f:
        rows = [(int(r["step"]), float(r["lr-SGD"])) for r in csv.DictReader(f) if r.get("lr-SGD")]
    return dict(rows)


def _last_step(run: Path) -> int:
    import torch

    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return state["global_step"]


@pytest.mark.parametrize(
    ("first", "second", "old_total", "new_total"),
    [
        (["--trainer.max_epochs", "2"], ["--trainer.max_epochs", "4"], 8, 16),
        (
            ["--trainer.max_epochs", "100", "--trainer.max_steps", "16"],
            ["--trainer.max_epochs", "100", "--trainer.max_steps", "32"],
            16,
            32,
        ),
    ],
    ids=["max_epochs 2->4", "max_steps 16->32"],
)
def test_extended_run_follows_the_new_length(
    tiny_cityscapes, tmp_path, monkeypatch, caplog, first, second, old_total, new_total
):
    monkeypatch.chdir(tmp_path)
    _fit(tiny_cityscapes, *first)
    run = tmp_path / "runs" / "demo" / "version_0"
    assert _last_step(run) == old_total
    with caplog.at_level(logging.INFO):
        _fit(tiny_cityscapes, *second, "--ckpt_path", "last")
    assert f"LR schedule: {old_total} -> {new_total} steps" in caplog.text
    assert not (tmp_path / "runs" / "demo" / "version_1").exists()
    lrs = _lr_rows(run)
    assert sorted(lrs) == list(range(new_total))  # every step logged once
    for step in range(old_total):  # the first run, on its own schedule
        assert lrs[step] == pytest.approx(BASE_LR * (1 - step / old_total) ** 0.9, abs=1e-6)
    for step in range(old_total, new_total):  # the extension, on the new one
        assert lrs[step] == pytest.approx(BASE_LR * (1 - step / new_total) ** 0.9, abs=1e-6)
        assert lrs[step] > 0
    assert _last_step(run) == new_total


def test_a_shorter_run_than_the_checkpoint_is_one_line(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit(tiny_cityscapes, "--trainer.max_epochs", "2")
    with pytest.raises(SystemExit) as exit_info:
        _fit(tiny_cityscapes, "--trainer.max_epochs", "1", "--ckpt_path", "last")
    assert exit_info.value.code == 2


def test_a_checkpoint_of_aspp_seg_0_2_is_extended_too(
    tiny_checkpoint, tiny_cityscapes, tmp_path, monkeypatch, caplog
):
    """A 0.2 checkpoint: the LR scaling and evaluation stride in its hyperparameters (the
    module's then) are not applied; its schedule's length, under aspp-seg's own key as
    the module wrote it, is read by the callback that rebuilds the schedule now."""
    import torch

    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"].update(lr_scaling="none", lr_base_batch_size=8,
                                     eval_output_stride=None)  # fmt: skip
    steps = state["aspp_seg"]["schedule_steps"]
    state["lr_schedulers"][0]["total_iters"] = 999  # the key wins over the scheduler's own
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        main(["fit", *demo_args(tiny_cityscapes,
              "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0",
              "--trainer.logger", "false", "--trainer.callbacks", "[]",
              "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(old))])  # fmt: skip
    assert f"LR schedule: {steps} -> 4 steps" in caplog.text
