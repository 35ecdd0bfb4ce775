"""The share of ASPP taps on the padding: a hand count, the real layer, a real config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.models import ASPP
from experiments.aspp_padding import describe, markdown, padding_fraction


def test_a_hand_counted_case():
    # a 3x3 map, 3x3 kernel, rate 1: per axis the taps inside are 2, 3, 2 of 3 each,
    # so 7 x 7 = 49 of the 81 taps are inside
    assert padding_fraction((3, 3), 3, 1) == pytest.approx(32 / 81)
    assert padding_fraction((11, 15), 3, 18) == pytest.approx(8 / 9)  # only the centre
    assert padding_fraction((11, 15), 1, 7) == 0.0  # a 1x1 kernel has no padding


@pytest.mark.parametrize(("kernel_size", "rate"), [(3, 1), (3, 6), (3, 12), (4, 8), (4, 2)])
def test_matches_the_aspp_branch_convolution(kernel_size, rate):
    """Counted independently: the ASPP's own branch conv (its padding and dilation) run
    with all-ones weights over an all-ones map counts the taps inside at each position."""
    size = (11, 15)
    aspp = ASPP(1, rates=[rate], kernel_size=kernel_size, channels=1)
    conv = next(m for m in aspp.atrous_branches[0].modules() if isinstance(m, nn.Conv2d))
    ones = torch.ones(1, 1, *size)
    inside = F.conv2d(ones, torch.ones_like(conv.weight), padding=conv.padding,
                      dilation=conv.dilation)  # fmt: skip
    assert inside.shape[-2:] == size  # same padding
    expected = 1 - float(inside.sum()) / (size[0] * size[1] * kernel_size**2)
    assert padding_fraction(size, kernel_size, rate) == pytest.approx(expected)


def test_a_config_is_sized_by_a_forward_pass(tmp_path):
    overlay = tmp_path / "small.yaml"
    overlay.write_text(
        "model.net.init_args.backbone: resnet18\ndata:\n  init_args:\n    crop_size: [97, 130]\n"
    )
    row = describe("dl2", [str(overlay)])
    assert row["size"] == (7, 9)  # 97 / 16 and 130 / 16, rounded up as the convs round
    assert row["rates"] == [3, 6, 9]
    assert row["fractions"] == [padding_fraction((7, 9), 3, r) for r in (3, 6, 9)]
    assert "| dl2 | 97x130 | 7x9 | 3 (3x3) -> " in markdown({"dl2": row})
