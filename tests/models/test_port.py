"""Weight port from torchvision: our DeepLabV3 built the torchvision way gives
torchvision's logits from torchvision's weights (random here: no download); the one
torchvision reference builder is torchvision's own network."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from aspp_seg.data.transforms import normalize_images
from aspp_seg.errors import ConfigError
from aspp_seg.models import ASPP, deeplabv3, load_torchvision_deeplabv3, torchvision_deeplabv3
from aspp_seg.models.port import torchvision_to_ours

TORCHVISION_LAYOUT = {
    "backbone": "resnet50",
    "pretrained": False,
    "output_stride": 8,
    "aspp": partial(ASPP, rates=[12, 24, 36], dropout=0.5),
    "head_convs": 1,
}


@pytest.fixture(scope="module")
def torchvision_net() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision_deeplabv3(backbone="resnet50", aux_head=True, num_classes=21)
    # random BatchNorm statistics and affine terms, so that every tensor matters
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize(
    ("ours", "stock"),
    [
        ({}, "deeplabv3_resnet101"),
        ({"backbone": "resnet50", "aux_head": True}, "deeplabv3_resnet50"),
    ],
)
def test_reference_builder_is_torchvisions_network(ours, stock):
    from torchvision.models import segmentation

    with torch.device("meta"):
        built = torchvision_deeplabv3(num_classes=19, **ours)
        reference = getattr(segmentation, stock)(
            weights=None, weights_backbone=None, num_classes=19, aux_loss=ours.get("aux_head")
        )
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    assert repr(built) == repr(reference)
    with pytest.raises(ConfigError, match=r"head_convs=2; allowed: \(0, 1\)"):
        torchvision_deeplabv3(head_convs=2)


def test_ported_model_gives_torchvision_logits(torchvision_net):
    ours = deeplabv3(num_classes=21, aux_head=True, **TORCHVISION_LAYOUT)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in torchvision_net.parameters()
    )
    load_torchvision_deeplabv3(ours, torchvision_net.state_dict())
    ours.eval()
    image = torch.randint(0, 256, (1, 3, 65, 81), dtype=torch.uint8)
    with torch.no_grad():
        theirs = torchvision_net(normalize_images(image))["out"]  # torchvision: normalised
        mine = ours(image)["out"]  # ours: RGB 0-255, normalised inside
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
