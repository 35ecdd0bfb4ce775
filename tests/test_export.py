"""`aspp-seg export`: ONNX and TorchScript give PyTorch's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aspp_seg.cli import main
from aspp_seg.errors import UserError
from aspp_seg.export import (
    LogitsModel,
    export_torchscript,
    load_network,
    max_difference,
    run_config_of,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    """The checkpoint's network as images -> logits (loaded with the run's config.yaml)."""
    return LogitsModel(load_network(tiny_checkpoint)).eval()


def test_onnx_export_command_matches_pytorch(tiny_checkpoint, trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    output = tmp_path / "model.onnx"
    main(["export", "--ckpt_path", str(tiny_checkpoint), "--format", "onnx",
          "--size", "64", "128", "--output", str(output)])  # fmt: skip
    assert "max |logit difference|" in capsys.readouterr().out
    # onnxruntime, at another batch size and image size than the export's example
    assert max_difference(trained, output, torch.randn(3, 3, 96, 160)) <= 1e-3


def test_torchscript_export_matches_pytorch(trained, tmp_path):
    output = export_torchscript(trained, tmp_path / "model.pt", size=(64, 128))
    assert max_difference(trained, output, torch.randn(2, 3, 96, 160)) <= 1e-3


def test_loaded_network_has_the_checkpoint_weights(tiny_checkpoint, trained):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    name, value = next((k, v) for k, v in state.items() if k.startswith("net.head."))
    torch.testing.assert_close(trained.net.state_dict()[name[len("net.") :]], value)
    assert run_config_of(tiny_checkpoint).name == "config.yaml"


def test_checkpoint_and_config_that_do_not_fit_are_named(tiny_checkpoint):
    with pytest.raises(UserError, match="does not fit the net of the config"):
        load_network(tiny_checkpoint, REPO / "configs" / "demo.yaml")  # 64 channels, not 16
