"""Models on tiny CPU inputs: shapes, NaNs, backward, batch size 1, every ASPP axis,
output-stride switching, multi-grid, DeepLabV3+, SegNet, the activation reaching every
layer, ASPP subclasses from YAML, the nets' own input normalisation, one-line errors."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models import (
    ASPP,
    MODELS,
    SegNet,
    TimmBackbone,
    check_eval_output_stride,
    deeplabv3,
    deeplabv3plus,
    segnet,
    set_output_stride,
)
from aspp_seg.models.heads import DeepLabHead, DeepLabV3PlusHead
from aspp_seg.models.layers import GroupNorm, PoolingBatchNorm2d

REPO = Path(__file__).resolve().parents[2]
TINY = {"backbone": "resnet18", "pretrained": False}


def aspp(*, channels: int = 16, **settings) -> partial:
    """The ASPP setting of a builder: ASPP with `settings` bound (16 channels: tiny)."""
    return partial(ASPP, channels=channels, **settings)


def images(*shape: int) -> torch.Tensor:
    """Random uint8 RGB images, B x 3 x H x W, as the data modules yield them."""
    return torch.randint(0, 256, shape, dtype=torch.uint8)


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
    with pytest.raises(ConfigError, match=r"output_stride=12 .*allowed: \(8, 16, 32\)"):
        TimmBackbone("resnet18", pretrained=False, output_stride=12)
    with pytest.raises(ConfigError, match="not a timm model"):
        TimmBackbone("resnet_nope", pretrained=False)
    with pytest.raises(ConfigError, match=r"multi_grid=\[1, 2, 4\] .* 2 blocks"):
        TimmBackbone("resnet18", pretrained=False, multi_grid=[1, 2, 4])
    with pytest.raises(ConfigError, match=r"norm='layer' .*allowed: \('batch', 'group'\)"):
        deeplabv3(**TINY, aspp=aspp(), norm="layer")


@pytest.mark.parametrize(
    "rates", [[], [6], [6, 12], [6, 12, 18], [6, 12, 18, 24], [3, 6, 9, 12, 15]]
)
@pytest.mark.parametrize("kernel_size", [1, 3, 4, 5])
@pytest.mark.parametrize("image_pooling", [True, False])
def test_aspp_keeps_size_for_any_rates(rates, kernel_size, image_pooling):
    rates = [2 * r for r in rates] if kernel_size % 2 == 0 else rates
    aspp = ASPP(32, rates=rates, kernel_size=kernel_size, channels=8, image_pooling=image_pooling)
    branches = len(rates) + 1 + image_pooling
    assert len(aspp.branches) == branches
    assert aspp.project[0][0].in_channels == 8 * branches
    for branch, rate in zip(aspp.atrous_branches, rates, strict=True):
        conv = branch.spatial_conv
        assert conv.kernel_size == (kernel_size, kernel_size)
        assert conv.dilation == (rate, rate)
    x = torch.randn(2, 32, 9, 11, requires_grad=True)
    out = aspp(x)
    assert out.shape == (2, 8, 9, 11)
    assert torch.isfinite(out).all()
    out.mean().backward()
    assert x.grad is not None


@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize("pointwise_branch", [True, False])
def test_aspp_separable_and_pointwise(separable, pointwise_branch):
    aspp = ASPP(
        16, rates=[2, 4], channels=8, separable=separable, pointwise_branch=pointwise_branch
    )
    depthwise = aspp.atrous_branches[0].spatial_conv
    assert depthwise.groups == (16 if separable else 1)
    assert len(aspp.branches) == 2 + 1 + pointwise_branch
    assert aspp(torch.randn(1, 16, 7, 5)).shape == (1, 8, 7, 5)


def test_aspp_invalid_settings_are_one_line():
    with pytest.raises(ConfigError, match="kernel_size=4 with rate 3") as info:
        ASPP(8, rates=[3], kernel_size=4)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="ASPP has no branch"):
        ASPP(8, rates=[], pointwise_branch=False, image_pooling=False)
    with pytest.raises(ConfigError, match=r"rates=\[0, 6\] must all be >= 1"):
        ASPP(8, rates=[0, 6])
    with pytest.raises(ConfigError, match="kernel_size=4 with rate 9"):
        deeplabv3(**TINY, aspp=aspp(kernel_size=4, rates=[8, 9]))


@pytest.mark.parametrize(
    ("output_stride", "size", "aux_head"),
    [(8, (33, 47), True), (16, (64, 96), False), (32, (33, 47), False)],
)
def test_deeplabv3_logits_at_input_size(output_stride, size, aux_head):
    net = deeplabv3(
        num_classes=5, output_stride=output_stride, aux_head=aux_head, aspp=aspp(), **TINY
    )
    net.train()
    outputs = net(images(2, 3, *size))
    assert set(outputs) == ({"out", "aux"} if aux_head else {"out"})
    for value in outputs.values():
        assert value.shape == (2, 5, *size)
        assert torch.isfinite(value).all()
    sum(v.mean() for v in outputs.values()).backward()
    net.eval()
    assert set(net(images(1, 3, 33, 35))) == {"out"}  # aux only in training


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_batch_size_one_trains(norm):
    net = deeplabv3(num_classes=3, norm=norm, aux_head=True, aspp=aspp(), **TINY).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    before = [p.detach().clone() for p in net.head.parameters()]
    outputs = net(images(1, 3, 33, 33))
    loss = sum(
        nn.functional.cross_entropy(v, torch.zeros(1, 33, 33).long()) for v in outputs.values()
    )
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.head.parameters(), strict=True))
    pooling_norm = net.head.aspp.branches[-1].conv[1]
    assert isinstance(pooling_norm, PoolingBatchNorm2d if norm == "batch" else GroupNorm)


def test_pooling_batchnorm_at_batch_one_uses_running_stats():
    norm = PoolingBatchNorm2d(4).train()
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    x = torch.full((1, 4, 1, 1), 3.0)
    assert torch.allclose(norm(x), torch.ones_like(x), atol=1e-4)  # (3 - 1) / sqrt(4)
    assert torch.equal(norm.running_mean, torch.ones(4))  # stats left alone
    y = torch.randn(2, 4, 1, 1)
    assert torch.allclose(norm(y), nn.functional.batch_norm(y, None, None, training=True))


def test_group_norm_keeps_two_channels_per_group():
    assert GroupNorm(256).num_groups == 32
    assert GroupNorm(16).num_groups == 8
    assert GroupNorm(48).num_groups == 16


def test_multi_grid_sets_last_stage_dilations():
    net = deeplabv3(num_classes=3, backbone="resnet50", pretrained=False, multi_grid=[1, 2, 4])
    layer4 = net.backbone.body.layer4
    assert [block.conv2.dilation[0] for block in layer4] == [2, 4, 8]  # OS16: rate 2 x unit
    assert [block.conv2.padding[0] for block in layer4] == [2, 4, 8]
    net.set_output_stride(8)
    assert [block.conv2.dilation[0] for block in layer4] == [4, 8, 16]
    assert net(images(1, 3, 33, 33))["out"].shape == (1, 3, 33, 33)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet18d"])  # d: avg-pool downsampling
def test_output_stride_switch_equals_a_model_built_there(backbone):
    """OS16 -> OS8 with doubled rates is exactly the OS8 model with the same weights."""
    torch.manual_seed(0)
    trained = deeplabv3(num_classes=3, backbone=backbone, pretrained=False, aspp=aspp()).eval()
    built = deeplabv3(
        num_classes=3,
        backbone=backbone,
        pretrained=False,
        output_stride=8,
        aspp=aspp(rates=[12, 24, 36]),
    ).eval()
    built.load_state_dict(trained.state_dict())
    x = images(1, 3, 33, 51)
    with torch.no_grad():
        at16 = trained(x)["out"]
        set_output_stride(trained, 8)
        assert trained.head.aspp.rates == (12, 24, 36)
        assert trained.backbone.feature_info[-1]["reduction"] == 8
        assert torch.equal(trained(x)["out"], built(x)["out"])
        assert trained.backbone(x.float())[-1].shape[-2:] == (5, 7)
        set_output_stride(trained, 16)
        assert torch.equal(trained(x)["out"], at16)


def test_eval_output_stride_errors_name_the_setting():
    net = deeplabv3(num_classes=3, aspp=aspp(rates=[6, 12, 18]), **TINY)
    with pytest.raises(ConfigError, match=r"output_stride=12 .*allowed"):
        check_eval_output_stride(net, 12)
    with pytest.raises(ConfigError, match=r"output_stride\)=32 .*\[1.5, 3.0, 4.5\]"):
        check_eval_output_stride(deeplabv3(num_classes=3, aspp=aspp(rates=[3, 6, 9]), **TINY), 32)
    with pytest.raises(ConfigError, match=r"output_stride\) needs a DeepLab network"):
        check_eval_output_stride(SegNet(3, stages=((4,), (8,))), 8)
    check_eval_output_stride(net, 8)
    assert net.output_stride == 16  # checking changes nothing


def test_head_reads_channels_from_backbone():
    net = deeplabv3(
        num_classes=3, backbone="resnet50", pretrained=False, aspp=aspp(channels=8), aux_head=True
    )
    info = net.backbone.feature_info
    assert net.head.aspp.branches[0][0].in_channels == info[-1]["num_chs"]
    assert net.aux_head.conv[0].in_channels == info[-2]["num_chs"]
    net.reset_classifier(7)
    assert net.num_classes == 7
    assert net.aux_head.classifier.out_channels == 7


def test_torchvision_style_head_has_a_3x3_conv():
    net = deeplabv3(num_classes=3, head_convs=1, aspp=aspp(), **TINY)
    assert net.head.refine[0][0].kernel_size == (3, 3)
    assert net.head.refine[0][0].in_channels == 16  # as wide as the ASPP output
    assert len(deeplabv3(num_classes=3, aspp=aspp(), **TINY).head.refine) == 0


@pytest.mark.parametrize("separable", [False, True])
def test_deeplabv3plus_fuses_stride4_features(separable):
    net = deeplabv3plus(
        num_classes=4, decoder_channels=16, aspp=aspp(separable=separable), **TINY
    ).train()
    assert net.backbone.feature_info[net.head.low_level_index]["reduction"] == 4
    # the ASPP's `separable` also switches the decoder's 3x3 convs
    assert (net.head.fuse[0][0].groups > 1) == separable
    out = net(images(1, 3, 33, 47))["out"]
    assert out.shape == (1, 4, 33, 47)
    out.mean().backward()
    with pytest.raises(ConfigError, match=r"low_level_stride=3 .*allowed: \[2, 4, 8, 16\]"):
        deeplabv3plus(num_classes=4, low_level_stride=3, aspp=aspp(), **TINY)


def test_segnet_unpools_to_odd_sizes_and_counts_like_segnet():
    net = segnet(num_classes=19, pretrained=False)
    # VGG-16-BN encoder + mirrored decoder: 29.45M, as SegNet's paper reports (29.5M)
    assert 29.4e6 < sum(p.numel() for p in net.parameters()) < 29.5e6
    assert sum(isinstance(m, nn.Conv2d) for m in net.encoder) == 13
    small = SegNet(5, stages=((8, 8), (16, 16), (16,))).train()
    out = small(images(2, 3, 37, 45))["out"]
    assert out.shape == (2, 5, 37, 45)
    out.mean().backward()
    small.reset_classifier(2)
    assert small.num_classes == 2
    assert small(images(1, 3, 16, 16))["out"].shape == (1, 2, 16, 16)


def test_segnet_encoder_matches_torchvision_vgg16_bn_layout():
    from torchvision.models import vgg16_bn

    vgg = vgg16_bn(weights=None)
    net = segnet(num_classes=3, pretrained=False)
    ours = net.encoder.state_dict()
    theirs = vgg.features.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_registry_holds_every_builder():
    assert set(MODELS) == {"deeplabv3", "deeplabv3plus", "segnet"}


FEATURES = [{"num_chs": 8, "reduction": 4}, {"num_chs": 16, "reduction": 8}]


def _relus(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.ReLU)]


@pytest.mark.parametrize("separable", [False, True])
def test_activation_reaches_every_branch_and_decoder_conv(separable):
    settings = {"rates": [2, 4], "channels": 8, "separable": separable}
    built = {
        "aspp": ASPP(16, act_layer=nn.GELU, **settings),
        "deeplabv3": DeepLabHead(
            feature_info=FEATURES,
            num_classes=3,
            aspp=partial(ASPP, **settings),
            head_convs=1,
            act_layer=nn.GELU,
        ),
        "deeplabv3plus": DeepLabV3PlusHead(
            feature_info=FEATURES,
            num_classes=3,
            aspp=partial(ASPP, **settings),
            decoder_channels=8,
            act_layer=nn.GELU,
        ),
    }
    for name, module in built.items():
        assert _relus(module) == [], name
        assert any(isinstance(m, nn.GELU) for m in module.modules()), name
    features = [torch.randn(1, 8, 12, 16), torch.randn(1, 16, 6, 8)]
    assert built["deeplabv3plus"](features).shape == (1, 3, 12, 16)


class ScaledASPP(ASPP):
    """An ASPP with a constructor argument that heads and builders do not know of."""

    def __init__(self, in_channels: int, *, scale: float = 1.0, **kwargs) -> None:
        super().__init__(in_channels, **kwargs)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


@pytest.mark.parametrize("builder", ["deeplabv3", "deeplabv3plus"])
def test_new_aspp_argument_reaches_yaml_without_touching_builders(builder):
    from aspp_seg.cli.config import build_net, read_config

    class_path = f"{ScaledASPP.__module__}.{ScaledASPP.__qualname__}"
    net_yaml = f"""
        class_path: aspp_seg.models.{builder}
        init_args:
          backbone: resnet10t
          pretrained: false
          aspp:
            class_path: {class_path}
            init_args: {{scale: 0.5, rates: [2, 4], channels: 8}}
    """
    # parsed by aspp-seg's own LightningCLI parser, as `aspp-seg fit --config` does
    demo = ["--config", str(REPO / "configs" / "demo.yaml")]
    net = build_net(read_config([*demo, "--model.net", net_yaml]))
    assert type(net.head.aspp) is ScaledASPP
    assert net.head.aspp.scale == 0.5 and net.head.aspp.rates == (2, 4)
    assert net.head.aspp.out_channels == 8
    # a dotted override of the new argument, as on the command line
    overrides = ["--model.net", net_yaml, "--model.net.init_args.aspp.init_args.scale", "0.0"]
    zero = build_net(read_config([*demo, *overrides])).eval()
    assert zero.head.aspp.scale == 0.0
    with torch.no_grad():
        assert not zero.head.aspp(torch.randn(1, 512, 4, 4)).any()  # the scale took effect


def test_nets_take_uint8_and_float_rgb_and_normalise_like_albumentations():
    from aspp_seg.data.transforms import normalize_images

    torch.manual_seed(0)
    net = deeplabv3(num_classes=3, aspp=aspp(), **TINY).eval()
    x = images(2, 3, 33, 41)
    with torch.no_grad():
        from_uint8 = net(x)["out"]
        assert torch.equal(from_uint8, net(x.float())["out"])
        # the same as the old pipeline: normalised outside, then the rest of the net
        outside = net.head(net.backbone(normalize_images(x)))
        expected = nn.functional.interpolate(
            outside, size=(33, 41), mode="bilinear", align_corners=False
        )
    assert torch.equal(from_uint8, expected)
    # the statistics are buffers that stay out of the state dict (old checkpoints load)
    buffers = dict(net.named_buffers())
    assert "pixel_mean" in buffers and "pixel_std" in buffers
    assert not any(key.startswith("pixel_") for key in net.state_dict())
    net.load_state_dict(deeplabv3(num_classes=3, aspp=aspp(), **TINY).state_dict())
    with pytest.raises(ValueError, match=r"B x 3 x H x W .*\(3, 33, 41\)"):
        net(x[0])


def test_segnet_normalises_its_input():
    net = SegNet(3, stages=((4,), (8,))).eval()
    x = images(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(net(x)["out"], net(x.float())["out"])
    assert not any(key.startswith("pixel_") for key in net.state_dict())


def test_normalisation_keeps_channels_last():
    from aspp_seg.models.preprocess import normalize_pixels

    net = deeplabv3(num_classes=3, aspp=aspp(), **TINY).eval()
    net = net.to(memory_format=torch.channels_last)
    x = images(2, 3, 32, 48).contiguous(memory_format=torch.channels_last)
    normalised = normalize_pixels(x, net.pixel_mean, net.pixel_std)
    assert normalised.is_contiguous(memory_format=torch.channels_last)
    assert normalised.dtype == torch.float32
    with torch.no_grad():
        nchw = net(x.contiguous())["out"]
        nhwc = net(x)["out"]
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)
