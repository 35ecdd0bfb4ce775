"""`aspp_seg.callbacks.EMA`: validation runs on the averaged weights, checkpoints hold
them where `validate` / `load_model` read, and ``--ckpt_path last`` continues the average.

The resume check folds the live weights of the resumed steps into the checkpoint's
average by hand (ema = d * ema + (1 - d) * w) and compares with the average the callback
reached: exact up to float32 rounding of the lerp (1e-6), and independent of the data
order, which after a resume is not that of an uninterrupted run (the train loader's
shuffle draws from the RNG of the new process).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from aspp_seg.callbacks import EMA
from aspp_seg.cli import main
from aspp_seg.loading import load_model

REPO = Path(__file__).resolve().parents[1]
DECAY = 0.5  # a short memory, so that 8 steps move the average far from the live weights

CALLBACKS = f"""
trainer:
  callbacks:
    - class_path: aspp_seg.callbacks.ModelCheckpoint
      init_args: {{monitor: val/mIoU, mode: max, save_last: true, filename: "best-{{epoch:02d}}"}}
    - class_path: aspp_seg.callbacks.EMA
      init_args: {{decay: {DECAY}}}
    - class_path: test_ema.Record
"""

SEEN: dict[str, dict] = {"val": {}, "val_end": {}, "live": {}}
"""What `Record` saw, by global step (one process: the CLI runs in the test's)."""


def _net_state(pl_module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


class Record(Callback):
    """The weights validation ran with, and the live weights after each step."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            SEEN["val"][trainer.global_step] = _net_state(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            SEEN["val_end"][trainer.global_step] = _net_state(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        SEEN["live"][trainer.global_step] = _net_state(pl_module)  # after EMA's update


def _fit(root: Path, extra: Path, *more: str) -> None:
    main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--config", str(extra),
          "--data.init_args.root", str(root),
          "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.channels", "16",
          "--trainer.log_every_n_steps", "1", "--trainer.limit_val_batches", "1",
          "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
          *more])  # fmt: skip


def _net_part(state: dict) -> dict[str, torch.Tensor]:
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def _assert_equal(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **(tolerance or {"rtol": 0, "atol": 0}))


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_ema_evaluates_saves_and_resumes_the_average(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seen in SEEN.values():
        seen.clear()
    extra = tmp_path / "ema.yaml"
    extra.write_text(CALLBACKS)
    _fit(tiny_cityscapes, extra, "--trainer.max_epochs", "2")
    last = tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 8
    ema, live = _net_part(checkpoint["state_dict"]), _net_part(checkpoint["current_model_state"])
    assert _differs(ema, live)

    # (a) validation ran on the average, and callbacks after it (overlays) still see it
    _assert_equal(SEEN["val"][8], ema)
    _assert_equal(SEEN["val_end"][8], ema)
    _assert_equal(SEEN["live"][8], live)  # training itself on the live weights
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 8

    # (b) what `validate` / `test` / `predict` / `export` and `load_model` read
    loaded = load_model(last)
    _assert_equal({k: v.cpu() for k, v in loaded.net.state_dict().items()}, ema)

    # (c) resumed: the average continues from the checkpoint's, over the live weights
    SEEN["live"].clear()
    _fit(tiny_cityscapes, extra, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 12
    assert sorted(SEEN["live"]) == [9, 10, 11, 12]
    expected = {k: v.double() for k, v in ema.items()}
    for step in sorted(SEEN["live"]):
        for key, weight in SEEN["live"][step].items():
            if weight.is_floating_point():
                expected[key] = DECAY * expected[key] + (1 - DECAY) * weight.double()
    averaged = _net_part(resumed["state_dict"])
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-6, atol=1e-7, msg=key)
    _assert_equal(_net_part(resumed["current_model_state"]), SEEN["live"][12])
    assert int(resumed["averaging_state"]["n_averaged"]) == 12


def test_ema_decay_is_checked():
    with pytest.raises(ValueError, match=r"decay=1.5 must lie in \[0, 1\]"):
        EMA(decay=1.5)
