"""`aspp_seg.load_model`: a trained run from Python predicts what `aspp-seg predict` writes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import aspp_seg
from aspp_seg.cli.main import main
from aspp_seg.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from aspp_seg.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(tiny_cityscapes) -> Path:
    return sorted((tiny_cityscapes / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[0]


def test_predicts_what_aspp_seg_predict_writes(tiny_checkpoint, image, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    main(["predict", "--config", str(tiny_checkpoint.parent.parent / "config.yaml"),
          "--ckpt_path", str(tiny_checkpoint), "--trainer.logger", "false",
          "--data.init_args.predict_source", str(image), "--model.predict_dir", str(out),
          "--trainer.default_root_dir", str(tmp_path),  # keep the run's config.yaml
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    written = cv2.imread(str(out / "trainIds" / image.name), cv2.IMREAD_UNCHANGED)

    model = aspp_seg.load_model(tiny_checkpoint.parent.parent)  # the run folder
    labels = model.predict(image)
    assert labels.dtype == np.uint8 and labels.shape == written.shape
    # predict runs the net channels_last on the CPU: a tie may round the other way
    assert (labels == written).mean() > 0.999
    assert not model.net.training
    assert model.class_names == list(CITYSCAPES_CLASSES)
    assert model.palette == [tuple(c) for c in CITYSCAPES_PALETTE]


def test_array_tensor_and_checkpoint_inputs_agree(tiny_checkpoint, image):
    from aspp_seg.data.io import read_rgb

    model = aspp_seg.load_model(tiny_checkpoint)  # the .ckpt file itself
    rgb = read_rgb(image)
    from_array = model.predict(rgb)
    batch = torch.from_numpy(rgb).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    from_tensor = model.predict(batch)
    assert from_tensor.shape == (2, *rgb.shape[:2])
    np.testing.assert_array_equal(from_tensor[1].numpy(), from_array)
    np.testing.assert_array_equal(model.predict(batch.float())[0].numpy(), from_array)


def test_inference_settings_come_from_the_config(tiny_checkpoint, image):
    model = aspp_seg.load_model(tiny_checkpoint, overrides=["--model.flip", "true"])
    assert model.inference.flip
    assert model.predict(image).shape == (64, 128)


def test_missing_run_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="neither a checkpoint nor a run folder"):
        aspp_seg.load_model(tmp_path / "nothing")
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match=r"no \*\.ckpt"):
        aspp_seg.load_model(tmp_path / "run")
