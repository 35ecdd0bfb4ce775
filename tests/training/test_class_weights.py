"""Class weights computed from the training split's label histogram: printed once, set
in the loss, and written into the run's config.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data.datasets.cityscapes import to_train_ids
from aspp_seg.training.losses import CrossEntropyLoss, class_weights

REPO = Path(__file__).resolve().parents[2]


def test_median_frequency_on_a_hand_built_histogram():
    # 2 images, 3 classes: class 2 only in the second image
    histogram = np.array([[60, 40, 0], [30, 50, 20]])
    # freq_c = pixels of c / labelled pixels of the images where c occurs
    freq = np.array([90 / 200, 90 / 200, 20 / 100])
    expected = np.median(freq) / freq
    np.testing.assert_allclose(class_weights(histogram, "median_frequency"), expected)
    inv = 1 / np.sqrt(np.array([90, 90, 20]) / 200)
    np.testing.assert_allclose(class_weights(histogram.sum(0), "inverse_sqrt"), inv / inv.mean())


def test_a_method_name_needs_fit_to_compute_the_weights():
    import torch

    loss = CrossEntropyLoss(weight="median_frequency")
    with pytest.raises(ValueError, match="computed from the training split"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="median_frequency"):
        CrossEntropyLoss(weight="median")


def test_fit_computes_prints_and_stores_the_weights(tiny_cityscapes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "balanced.yaml"
    config.write_text(
        "model:\n  loss:\n    class_path: aspp_seg.training.losses.CrossEntropyLoss\n"
        "    init_args: {weight: median_frequency}\n"
    )
    main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--config", str(config),
          "--data.init_args.root", str(tiny_cityscapes), "--data.init_args.batch_size", "8",
          "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.channels", "8",
          "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("aspp-seg: class weights (median_frequency, 16 training images)") == 1

    # an independent count: the labelIds files mapped with cityscapesscripts' table
    labels = sorted((tiny_cityscapes / "gtFine" / "train").rglob("*_gtFine_labelIds.png"))
    rows = [np.bincount(to_train_ids(np.asarray(Image.open(p))).ravel(), minlength=256)[:19]
            for p in labels]  # fmt: skip
    expected = class_weights(np.stack(rows), "median_frequency")

    run = tmp_path / "runs" / "demo" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]["loss"]
    assert saved["class_path"] == "aspp_seg.training.losses.CrossEntropyLoss"
    np.testing.assert_allclose(saved["init_args"]["weight"], expected, atol=1e-6)
    assert sum(w > 0 for w in saved["init_args"]["weight"]) == 9  # the demo's 9 classes
