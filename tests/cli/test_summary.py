"""`aspp-seg summary`: parameter counts equal torchvision's, GMACs match its published
figure, parts add up."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from aspp_seg.cli.commands.summary import PARTS, count
from aspp_seg.cli.main import main
from aspp_seg.models import ASPP, deeplabv3

REPO = Path(__file__).resolve().parents[2]


def _torchvision_like(backbone: str) -> torch.nn.Module:
    return deeplabv3(
        num_classes=21,
        backbone=backbone,
        pretrained=False,
        output_stride=8,
        aspp=partial(ASPP, rates=[12, 24, 36]),
        head_convs=1,
        aux_head=True,
    )


def _torchvision_gmacs(net: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net.eval()(torch.zeros(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2e9


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])  # meta device: fast
def test_counts_equal_torchvision(backbone):
    builder = {"resnet50": deeplabv3_resnet50, "resnet101": deeplabv3_resnet101}[backbone]
    with torch.device("meta"):
        theirs = builder(weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
        ours = _torchvision_like(backbone)
    result = count(ours, (520, 520))
    assert result["params"]["total"] == sum(p.numel() for p in theirs.parameters())
    assert sum(result["params"][p] for p in PARTS) == result["params"]["total"]
    # torchvision's DeepLabV3 runs its aux head in eval mode too, so its figure has it
    assert result["gmacs"]["total"] == pytest.approx(_torchvision_gmacs(theirs, 520), rel=1e-6)
    assert sum(result["gmacs"][p] for p in PARTS) == pytest.approx(result["gmacs"]["total"])
    assert result["gmacs"]["inference"] < result["gmacs"]["total"]
    if backbone == "resnet101":  # the figure torchvision publishes for deeplabv3_resnet101
        assert result["params"]["total"] == 60_996_202
        assert result["gmacs"]["total"] == pytest.approx(258.7, abs=0.05)


def test_summary_prints_a_table_for_the_study_configs(capsys):
    configs = [str(REPO / "configs" / f"{n}.yaml") for n in ("dl1", "segnet")]
    main(["summary", "--config", *configs, "--size", "65", "65"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| dl") or "segnet" in line]
    assert len(rows) == 2
    assert "| dl1.yaml | deeplabv3 | 65x65 | 58.040 |" in out
    assert "| segnet.yaml | segnet | 65x65 | 29.454 |" in out


def test_summary_json_has_parts(capsys):
    main(["summary", "--config", str(REPO / "configs" / "dl4.yaml"), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["size"] == [513, 513]  # the config's crop
    assert row["params"]["aspp"] > row["params"]["head"] > 0
    assert row["gmacs"]["backbone"] > row["gmacs"]["aspp"] > 0
    assert row["gmacs"]["aux"] == 0.0


def test_summary_of_a_missing_config_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["summary", "--config", str(tmp_path / "nope.yaml")])
    assert info.value.code == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
