"""`aspp-seg benchmark` on a tiny input: every figure present and the ratios consistent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from aspp_seg.cli.main import main
from aspp_seg.cli.timing import measure
from aspp_seg.models import port

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, capsys) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    main(["benchmark", "--config", str(REPO / "configs" / "demo.yaml"), "--size", "32", "48",
          "--batch", "2", "--iters", "1", "--warmup", "0", "--device", "cpu",
          "--json", str(out)])  # fmt: skip
    return capsys.readouterr().out, json.loads(out.read_text())


def _check(printed: str, report: dict) -> tuple[dict, dict]:
    assert "| ours / torchvision |" in printed and "GMACs/img" in printed
    ours = report["results"]["aspp-seg"]
    theirs = report["results"]["torchvision deeplabv3_resnet101"]
    for row in (ours, theirs):
        assert row["fwd_ms"] > 0 and row["train_ms"] > 0 and row["gmacs"] > 0
        assert math.isfinite(row["fwd_mem_mib"])
    for key in ("fwd_ms", "gmacs", "params_m"):
        assert report["ratios"][key] == pytest.approx(ours[key] / theirs[key])
    assert report["settings"]["batch"] == 2 and report["settings"]["device"] == "cpu"
    return ours, theirs


class _StandIn(nn.Module):
    """A tiny stand-in for torchvision's ResNet-101 DeepLabV3 (measured in the slow test)."""

    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict:
        return {"out": self.conv(x)}


def test_benchmark_prints_and_writes_ratios(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(port, "torchvision_deeplabv3", _StandIn)
    _, theirs = _check(*_run(tmp_path, capsys))
    assert theirs["gmacs"] == pytest.approx(19 * 3 * 9 * 32 * 48 / 1e9)


@pytest.mark.slow
def test_benchmark_against_torchvision_deeplabv3_resnet101(tmp_path, capsys):
    ours, theirs = _check(*_run(tmp_path, capsys))
    assert 58 < theirs["params_m"] < 61  # torchvision's R-101 DeepLabV3, 19 classes, no aux
    assert theirs["gmacs"] > ours["gmacs"]


def test_gmacs_of_a_known_convolution():
    conv = nn.Conv2d(3, 8, 3, padding=1)  # 3 * 8 * 9 MACs per output pixel
    result = measure(nn.Sequential(conv), size=(10, 20), batch=2, num_classes=8,
                     device=torch.device("cpu"), iters=1, warmup=0)  # fmt: skip
    assert result["gmacs"] == pytest.approx(3 * 8 * 9 * 10 * 20 / 1e9)
    assert result["params_m"] == pytest.approx((3 * 8 * 9 + 8) / 1e6)
