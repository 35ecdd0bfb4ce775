"""``model.loss`` is injected from YAML: every shipped loss trains the demo, and a loss
written in this file alone (no edit of aspp_seg) trains it too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import demo_args
from torch import nn

from aspp_seg.cli.main import main


class FocalLoss(nn.Module):
    """A loss aspp-seg does not ship (focal loss, Lin et al. 2017), to show the seam."""

    calls = 0

    def __init__(self, *, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        FocalLoss.calls += 1
        ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
        valid = target != 255
        return ((1 - torch.exp(-ce)) ** self.gamma * ce)[valid].mean()


def _fit(root: Path, work: Path, loss_yaml: str, *more: str) -> dict:
    """Two demo steps with `loss_yaml` as model.loss; returns the checkpoint."""
    config = work / "loss.yaml"
    config.write_text(f"model:\n  loss:\n{loss_yaml}")
    main(["fit", *demo_args(root, "--data.init_args.batch_size", "8",
          "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
          "--trainer.logger", "false", "--trainer.callbacks", "[]",
          "--trainer.default_root_dir", str(work), *more, configs=[config])])  # fmt: skip
    state = torch.load(next(work.rglob("*.ckpt")), map_location="cpu", weights_only=True)
    return state


SHIPPED = {
    "cross-entropy with class weights": """\
    class_path: aspp_seg.training.losses.CrossEntropyLoss
    init_args: {weight: [1, 2, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}
""",
    "OHEM": """\
    class_path: aspp_seg.training.losses.OhemCrossEntropyLoss
    init_args: {thresh: 0.7, min_kept: 1000}
""",
    "Lovász-softmax": """\
    class_path: aspp_seg.training.losses.LovaszSoftmaxLoss
""",
    "a weighted sum": """\
    class_path: aspp_seg.training.losses.WeightedSumLoss
    init_args:
      losses:
        - class_path: aspp_seg.training.losses.CrossEntropyLoss
        - class_path: aspp_seg.training.losses.LovaszSoftmaxLoss
      weights: [1.0, 0.5]
""",
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_each_shipped_loss_trains_the_demo(tiny_cityscapes, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    state = _fit(tiny_cityscapes, tmp_path, SHIPPED[name])
    assert state["global_step"] == 2
    weights = state["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_a_loss_defined_in_a_test_file_trains_the_demo(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    FocalLoss.calls = 0
    yaml = f"""\
    class_path: {__name__}.FocalLoss
    init_args: {{gamma: 1.5}}
"""
    state = _fit(tiny_cityscapes, tmp_path, yaml, "--model.net.init_args.aux_head", "true")
    assert state["global_step"] == 2
    assert FocalLoss.calls == 2 * 2  # two steps, each on the main and the aux output
