"""`aspp-seg export`: ONNX and TorchScript give PyTorch's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aspp_seg.cli import main
from aspp_seg.errors import UserError
from aspp_seg.export import LogitsModel, load_network, max_difference, run_config_of

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(fmt, tiny_checkpoint, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    output = tmp_path / f"model.{fmt}"
    main(["export", "--ckpt_path", str(tiny_checkpoint), "--format", fmt,
          "--size", "64", "128", "--output", str(output)])  # fmt: skip
    assert output.is_file()
    assert "max |logit difference|" in capsys.readouterr().out
    model = LogitsModel(load_network(tiny_checkpoint))
    # another batch size and image size than the example the export was made with
    images = torch.randn(3, 3, 96, 160)
    assert max_difference(model, output, images) <= 1e-3


def test_loaded_network_has_the_checkpoint_weights(tiny_checkpoint):
    net = load_network(tiny_checkpoint)
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    name, value = next((k, v) for k, v in state.items() if k.startswith("net.head."))
    torch.testing.assert_close(net.state_dict()[name[len("net.") :]], value)
    assert run_config_of(tiny_checkpoint).name == "config.yaml"


def test_checkpoint_and_config_that_do_not_fit_are_named(tiny_checkpoint):
    with pytest.raises(UserError, match="does not fit the net of the config"):
        load_network(tiny_checkpoint, REPO / "configs" / "demo.yaml")  # 64 channels, not 16
