"""Inference modes: sliding window and multi-scale + flip against whole-image inference."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.inference import Inference, slide_logits, window_starts
from aspp_seg.models import ASPP, deeplabv3


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = deeplabv3(num_classes=5, backbone="resnet18", pretrained=False, output_stride=8,
                    aspp=partial(ASPP, rates=(1, 2), channels=16)).eval()  # fmt: skip
    return lambda x: net(x)["out"]


class CountingModel(nn.Module):
    """A 1x1 conv (translation-equivariant, so windows change nothing) that records
    the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.conv(x)


@pytest.mark.parametrize(("size", "window", "stride"), [(50, 16, 10), (64, 16, 16), (7, 16, 5)])
def test_window_starts_cover_the_axis(size, window, stride):
    starts = window_starts(size, window, stride)
    covered = set()
    for s in starts:
        assert s >= 0 and s + min(window, size) <= size
        covered |= set(range(s, s + min(window, size)))
    assert covered == set(range(size))
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


@torch.no_grad()
@pytest.mark.parametrize("window", [(64, 96), (100, 200)])
def test_slide_with_a_window_over_the_whole_image_equals_whole(tiny_net, window):
    images = torch.randn(2, 3, 64, 96)
    whole = Inference(mode="whole")(tiny_net, images)
    slide = Inference(mode="slide", window=window, stride=(32, 32))(tiny_net, images)
    torch.testing.assert_close(slide, whole)


@torch.no_grad()
def test_overlapping_windows_are_averaged_and_batched():
    model = CountingModel()
    images = torch.randn(2, 3, 37, 53)
    logits = slide_logits(model, images, window=(16, 24), stride=(10, 12), batch_size=6)
    torch.testing.assert_close(logits, model.conv(images))
    windows = len(window_starts(37, 16, 10)) * len(window_starts(53, 24, 12))
    assert sum(model.batches) == 2 * windows
    assert max(model.batches) <= 6  # memory bounded: never all windows at once


class FlipSymmetric(nn.Module):
    """A conv whose kernel is mirror-symmetric: flipping the input flips the output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            w = self.conv.weight
            w.copy_((w + w.flip(-1)) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@torch.no_grad()
def test_flip_of_a_flip_symmetric_model_changes_nothing():
    model = FlipSymmetric()
    images = torch.randn(2, 3, 20, 30)
    plain = Inference()(model, images)
    flipped = Inference(flip=True)(model, images)
    torch.testing.assert_close(flipped, plain)
    sliding = Inference(mode="slide", window=(12, 12), stride=(8, 8), flip=True)(model, images)
    assert sliding.shape == plain.shape


@torch.no_grad()
def test_flip_changes_an_asymmetric_model(tiny_net):
    images = torch.randn(1, 3, 64, 96)
    assert not torch.allclose(Inference(flip=True)(tiny_net, images), tiny_net(images))


@torch.no_grad()
def test_multiscale_averages_resized_logits(tiny_net):
    images = torch.randn(1, 3, 64, 96)
    one = Inference(scales=(1.0,))(tiny_net, images)
    torch.testing.assert_close(one, tiny_net(images))
    many = Inference(scales=(0.5, 1.0, 1.5), flip=True)(tiny_net, images)
    assert many.shape == one.shape and torch.isfinite(many).all()
    half = torch.nn.functional.interpolate(images, size=(32, 48), mode="bilinear")
    expected = torch.nn.functional.interpolate(tiny_net(half), size=(64, 96), mode="bilinear")
    torch.testing.assert_close(Inference(scales=(0.5,))(tiny_net, images), expected)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"mode": "tiles"}, "allowed"), ({"window": (0, 5)}, "window"),
     ({"scales": ()}, "scales"), ({"stride": (4,)}, "stride")],
)  # fmt: skip
def test_bad_settings_are_config_errors(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        Inference(**kwargs)


def _module(inference: Inference | None = None):
    from aspp_seg.training.module import SegmentationModule

    torch.manual_seed(0)
    net = deeplabv3(num_classes=5, backbone="resnet18", pretrained=False, output_stride=8,
                    aspp=partial(ASPP, rates=(1, 2), channels=16))  # fmt: skip
    return SegmentationModule(net, class_names=list("abcde"), inference=inference).eval()


def test_class_names_are_the_datas_or_the_class_indices():
    from aspp_seg.training.module import SegmentationModule

    net = deeplabv3(num_classes=3, backbone="resnet18", pretrained=False,
                    aspp=partial(ASPP, rates=(1, 2), channels=8))  # fmt: skip
    assert SegmentationModule(net).class_names == ["0", "1", "2"]  # no data set's names
    assert SegmentationModule(net, class_names=("x", "y")).net.num_classes == 2
    with pytest.raises(ConfigError, match="holds 2 names for 4 classes"):
        SegmentationModule(net, num_classes=4, class_names=("x", "y"))


@torch.no_grad()
def test_module_evaluates_with_the_injected_inference():
    batch = {"image": torch.randn(2, 3, 64, 96), "mask": torch.randint(0, 5, (2, 64, 96))}
    whole = _module()
    slide = _module(Inference(mode="slide", window=(64, 96), stride=(32, 48)))
    slide.load_state_dict(whole.state_dict())
    assert slide.inference.mode == "slide" and whole.inference.is_plain
    whole._eval_step(batch, whole.val_confusion)
    slide._eval_step(batch, slide.val_confusion)
    assert torch.equal(whole.val_confusion.compute(), slide.val_confusion.compute())
    # inference settings stay out of the checkpoint's hyperparameters, so that the
    # command line's --model.inference wins over them when loading with --ckpt_path
    assert "inference" not in slide.hparams and "class_names" in slide.hparams


@torch.no_grad()
def test_output_stride_switches_for_evaluation_and_back():
    net = deeplabv3(num_classes=5, backbone="resnet18", pretrained=False, output_stride=16,
                    aspp=partial(ASPP, rates=(1, 2), channels=16))  # fmt: skip
    inference = Inference(output_stride=8)
    inference.check(net)
    inference.set_output_stride(net)
    assert (net.output_stride, net.head.aspp.rates) == (8, (2, 4))  # rates scale with it
    inference.set_output_stride(net, evaluating=False)
    assert (net.output_stride, net.head.aspp.rates) == (16, (1, 2))
    Inference().set_output_stride(net)  # None: the trained stride
    assert net.output_stride == 16
    with pytest.raises(ConfigError, match="output_stride=12 is not supported"):
        Inference(output_stride=12)
    with pytest.raises(ConfigError, match="not all integers"):
        _module(Inference(output_stride=32))  # rates 1, 2 at OS8 would be 0.25, 0.5


@torch.no_grad()
def test_predict_step_returns_labels_at_the_file_size():
    module = _module(Inference(scales=(1.0, 0.5), flip=True))
    batch = {"image": torch.randn(2, 3, 32, 48), "name": ["a", "b"],
             "size": torch.tensor([[64, 96], [64, 96]])}  # fmt: skip
    out = module.predict_step(batch, 0)
    assert out["pred"].shape == (2, 64, 96) and out["pred"].dtype == torch.uint8
