"""`aspp_seg.load_model`: a trained run from Python predicts what `aspp-seg predict` writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import aspp_seg
from aspp_seg.cli.main import main
from aspp_seg.data.datasets.cityscapes import CLASSES as CITYSCAPES_CLASSES
from aspp_seg.data.datasets.cityscapes import PALETTE as CITYSCAPES_PALETTE
from aspp_seg.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(tiny_cityscapes) -> Path:
    return sorted((tiny_cityscapes / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[0]


def test_predicts_what_aspp_seg_predict_writes(tiny_checkpoint, image, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    main(["predict", "--config", str(tiny_checkpoint.parent.parent / "config.yaml"),
          "--ckpt_path", str(tiny_checkpoint), "--trainer.logger", "false",
          "--data.init_args.predict_source", str(image), "--predict_dir", str(out),
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
    model = aspp_seg.load_model(
        tiny_checkpoint, overrides=["--model.inference.init_args.flip", "true"]
    )
    assert model.inference.flip
    assert model.predict(image).shape == (64, 128)


def test_missing_run_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="neither a checkpoint nor a run folder"):
        aspp_seg.load_model(tmp_path / "nothing")
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match=r"no \*\.ckpt"):
        aspp_seg.load_model(tmp_path / "run")


OLD_MODEL_KEYS = {  # a run of aspp-seg 0.2 saved these flat in config.yaml's model
    "lr_scaling": "none", "lr_base_batch_size": 8, "eval_output_stride": None,
    "inference": "slide", "window": [32, 64], "stride": None, "scales": [1.0],
    "flip": True, "window_batch": 2, "predict_dir": None,
}  # fmt: skip


def _old_run(checkpoint: Path, folder: Path, **hparams) -> tuple[Path, Path]:
    """A copy of the run of `checkpoint` as aspp-seg 0.2 wrote it: the inference and LR
    scaling settings flat in config.yaml's model, and in the checkpoint's
    hyperparameters eval_output_stride and the LR scaling (plus `hparams`). Returns the
    run folder and its checkpoint."""
    shutil.copytree(checkpoint.parent.parent, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    del config["lr_scaling"], config["model"]["inference"]
    config["model"].update(OLD_MODEL_KEYS)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = folder / "checkpoints" / checkpoint.name
    state = torch.load(path, map_location="cpu", weights_only=True)
    old = {"eval_output_stride": None, "lr_scaling": "none", "lr_base_batch_size": 8}
    state["hyper_parameters"].update({**old, **hparams})
    torch.save(state, path)
    return folder, path


def test_a_run_of_aspp_seg_0_2_is_one_error_naming_a_moved_setting(
    tiny_checkpoint, tiny_cityscapes, tmp_path, monkeypatch, capsys
):
    """No translation: a 0.2 run's config.yaml (flat inference keys in ``model``) and its
    checkpoint (``eval_output_stride`` in the hyperparameters) are each refused in one
    line that names the setting."""
    run, checkpoint = _old_run(tiny_checkpoint, tmp_path / "old", eval_output_stride=16)
    with pytest.raises(ConfigError, match=r"config \S+config\.yaml: .*\bmodel\.\w+"):
        aspp_seg.load_model(run)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:  # the old checkpoint under a current config
        main(["validate", "--config", str(tiny_checkpoint.parent.parent / "config.yaml"),
              "--ckpt_path", str(checkpoint), "--data.init_args.root", str(tiny_cityscapes),
              "--trainer.enable_progress_bar", "false"])  # fmt: skip
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aspp-seg: error: --ckpt_path {checkpoint}")
    assert "eval_output_stride" in lines[0]
