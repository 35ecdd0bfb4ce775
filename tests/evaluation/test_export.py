"""`aspp-seg export`: ONNX and TorchScript take RGB images 0-255 (uint8, as the data
modules yield them) and give PyTorch's logits, for DeepLabV3, DeepLabV3+ and SegNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aspp_seg.cli.main import main
from aspp_seg.errors import UserError
from aspp_seg.evaluation.export import (
    LogitsModel,
    example_images,
    export_onnx,
    export_torchscript,
    max_difference,
)
from aspp_seg.loading import load_model, run_config_of

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    """The checkpoint's network as images -> logits (loaded with the run's config.yaml)."""
    return LogitsModel(load_model(tiny_checkpoint).net).eval()


def test_onnx_export_command_matches_pytorch(tiny_checkpoint, trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    output = tmp_path / "model.onnx"
    main(["export", "--ckpt_path", str(tiny_checkpoint), "--format", "onnx",
          "--size", "64", "128", "--output", str(output)])  # fmt: skip
    assert "max |logit difference|" in capsys.readouterr().out
    # onnxruntime, at another batch size and image size than the export's example
    assert max_difference(trained, output, example_images((96, 160), batch=3)) <= 1e-3


def test_onnx_export_of_deeplabv3_takes_uint8_rgb(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    output = export_onnx(trained, tmp_path / "model.onnx", size=(64, 128))
    # onnxruntime, at another batch size and image size than the export's example
    assert max_difference(trained, output, example_images((96, 160), batch=3)) <= 1e-3
    with pytest.raises(UserError, match=r"takes tensor\(uint8\) images .* got tensor\(float\)"):
        max_difference(trained, output, example_images((64, 128), dtype="float32"))


def test_onnx_export_with_float_input(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    output = export_onnx(trained, tmp_path / "model.onnx", size=(64, 128), dtype="float32")
    assert max_difference(trained, output, example_images((64, 96), dtype="float32")) <= 1e-3


def test_torchscript_export_takes_uint8_and_float_rgb(trained, tmp_path):
    output = export_torchscript(trained, tmp_path / "model.pt", size=(64, 128))
    images = example_images((96, 160), batch=2)
    assert max_difference(trained, output, images) <= 1e-3
    assert max_difference(trained, output, images.float()) <= 1e-3


# SegNet and DeepLabV3+ round trips: tests/models/test_model_contract.py (every model)


def test_loaded_network_has_the_checkpoint_weights(tiny_checkpoint, trained):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    name, value = next((k, v) for k, v in state.items() if k.startswith("net.head."))
    torch.testing.assert_close(trained.net.state_dict()[name[len("net.") :]], value)
    assert run_config_of(tiny_checkpoint).name == "config.yaml"


def test_checkpoint_and_config_that_do_not_fit_are_named(tiny_checkpoint):
    with pytest.raises(UserError, match="does not fit the net of its config"):
        load_model(tiny_checkpoint, config=REPO / "configs" / "demo.yaml")  # 64 channels, not 16


def test_help_names_the_formats(capsys):
    """--format's allowed values read plainly (no `<function <lambda> at 0x...>`)."""
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "--format {onnx,torchscript}" in out
    assert "<lambda>" not in out and "<function" not in out
    with pytest.raises(SystemExit):
        main(["export", "--format", "tflite"])
    assert "choose from 'onnx', 'torchscript'" in capsys.readouterr().err
