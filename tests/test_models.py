import pytest
import torch

from aspp_seg.errors import ConfigError
from aspp_seg.models import ASPP, TimmBackbone, deeplabv3


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_reduction_and_channels(output_stride):
    backbone = TimmBackbone("resnet18", pretrained=False, output_stride=output_stride)
    feats = backbone(torch.randn(1, 3, 64, 96))
    assert len(feats) == len(backbone.feature_info)
    for feat, info in zip(feats, backbone.feature_info, strict=True):
        assert feat.shape[1] == info["num_chs"]
        assert feat.shape[-2:] == (64 // info["reduction"], 96 // info["reduction"])
    assert backbone.feature_info[-1]["reduction"] == output_stride


def test_backbone_rejects_bad_settings():
    with pytest.raises(ConfigError, match="output_stride=12"):
        TimmBackbone("resnet18", pretrained=False, output_stride=12)
    with pytest.raises(ConfigError, match="not a timm model"):
        TimmBackbone("resnet_nope", pretrained=False)


@pytest.mark.parametrize("rates", [[], [6], [6, 12, 18], [6, 12, 18, 24], [3, 6, 9, 12, 15]])
@pytest.mark.parametrize("kernel_size", [1, 3, 4])
def test_aspp_keeps_size_for_any_rates(rates, kernel_size):
    rates = [2 * r for r in rates] if kernel_size % 2 == 0 else rates
    aspp = ASPP(32, rates=rates, kernel_size=kernel_size, channels=16)
    assert len(aspp.branches) == len(rates) + 2
    assert aspp.project[0][0].in_channels == 16 * (len(rates) + 2)
    out = aspp(torch.randn(2, 32, 9, 11))
    assert out.shape == (2, 16, 9, 11)


def test_aspp_even_kernel_with_odd_rate_is_rejected():
    with pytest.raises(ConfigError, match="kernel_size=4 with rate 3"):
        ASPP(8, rates=[3], kernel_size=4)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("size", [(64, 128), (97, 131)])
def test_deeplabv3_logits_at_input_size(output_stride, size):
    net = deeplabv3(
        num_classes=5,
        backbone="resnet18",
        pretrained=False,
        output_stride=output_stride,
        channels=16,
    )
    out = net(torch.randn(2, 3, *size))["out"]
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()
    out.mean().backward()


def test_head_reads_channels_from_backbone():
    net = deeplabv3(num_classes=3, backbone="resnet50", pretrained=False, channels=8)
    assert net.head.aspp.branches[0][0].in_channels == net.backbone.feature_info[-1]["num_chs"]
    net.reset_classifier(7)
    assert net.num_classes == 7
