"""Weight port from torchvision: our DeepLabV3 built the torchvision way gives
torchvision's logits from torchvision's weights (random here: no download)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50

from aspp_seg.errors import ConfigError
from aspp_seg.models import deeplabv3, load_torchvision_deeplabv3
from aspp_seg.models.port import torchvision_to_ours

TORCHVISION_LAYOUT = {
    "backbone": "resnet50",
    "pretrained": False,
    "output_stride": 8,
    "rates": [12, 24, 36],
    "head_convs": 1,
    "dropout": 0.5,
}


@pytest.fixture(scope="module")
def torchvision_net() -> nn.Module:
    torch.manual_seed(0)
    net = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
    # random BatchNorm statistics and affine terms, so that every tensor matters
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return net.eval()


def test_ported_model_gives_torchvision_logits(torchvision_net):
    ours = deeplabv3(num_classes=21, aux_head=True, **TORCHVISION_LAYOUT)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in torchvision_net.parameters()
    )
    load_torchvision_deeplabv3(ours, torchvision_net.state_dict())
    ours.eval()
    x = torch.randn(1, 3, 65, 81)
    with torch.no_grad():
        theirs = torchvision_net(x)["out"]
        mine = ours(x)["out"]
    assert mine.shape == theirs.shape == (1, 21, 65, 81)
    assert (mine - theirs).abs().max().item() <= 1e-4
    assert theirs.abs().max().item() > 1.0  # not trivially zero


def test_every_tensor_is_renamed_onto_ours(torchvision_net):
    ours = deeplabv3(num_classes=21, aux_head=True, **TORCHVISION_LAYOUT)
    renamed = torchvision_to_ours(torchvision_net.state_dict())
    assert set(renamed) == set(ours.state_dict())


def test_port_from_file_via_builder_with_other_class_count(torchvision_net, tmp_path):
    path = tmp_path / "deeplabv3_resnet50.pth"
    torch.save({"model": torchvision_net.state_dict()}, path)  # a torchvision reference ckpt
    ours = deeplabv3(num_classes=19, torchvision_weights=str(path), **TORCHVISION_LAYOUT)
    # backbone and ASPP come from torchvision; the 19-class classifier stays fresh
    assert torch.equal(
        ours.backbone.body.conv1.weight, torchvision_net.backbone.conv1.weight.detach()
    )
    assert torch.equal(
        ours.head.aspp.project[0][0].weight,
        torchvision_net.classifier[0].project[0].weight.detach(),
    )
    assert ours.num_classes == 19 and ours.aux_head is None


def test_port_into_a_differently_built_model_names_the_settings(torchvision_net):
    ours = deeplabv3(num_classes=21, **{**TORCHVISION_LAYOUT, "head_convs": 0})
    with pytest.raises(ConfigError, match="head_convs 1"):
        load_torchvision_deeplabv3(ours, torchvision_net.state_dict())
    with pytest.raises(ConfigError, match="neither a file nor a torchvision weights name"):
        deeplabv3(num_classes=21, torchvision_weights="nowhere.pth", **TORCHVISION_LAYOUT)
