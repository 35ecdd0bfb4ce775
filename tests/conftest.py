"""Shared fixtures: a tiny synthetic Cityscapes tree, generated once per session."""

from __future__ import annotations

import pytest

from aspp_seg.data.synthetic import generate_demo_cityscapes


@pytest.fixture(scope="session")
def tiny_cityscapes(tmp_path_factory):
    """A synthetic data set in the Cityscapes layout: 16 train and 8 val 64x128 frames."""
    root = tmp_path_factory.mktemp("cityscapes")
    return generate_demo_cityscapes(root, num_train=16, num_val=8, height=64, width=128, seed=1)
