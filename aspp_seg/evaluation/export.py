"""Networks outside Lightning, exported to ONNX or TorchScript and checked against PyTorch.

    net = aspp_seg.load_model("runs/demo/version_0").net       # trained weights
    export_onnx(LogitsModel(net), "model.onnx", size=(1024, 2048))  # takes uint8 RGB

A network comes from `aspp_seg.loading.load_model` (a checkpoint and its run's config)
or `aspp_seg.cli.config.build_net` (a config, random weights); this module only wraps,
exports and runs it.

Exported networks take RGB images with values 0-255, B x 3 x H x W, as the data modules
yield them; they normalise inside (the net's ``pixel_mean`` / ``pixel_std``), so no
caller needs ImageNet's mean and std.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aspp_seg.data.io import replacing
from aspp_seg.errors import ConfigError, UserError

FORMATS = ("onnx", "torchscript")
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
"""Input types an ONNX export can be given (its graph fixes one); values are 0-255 in both."""


class LogitsModel(nn.Module):
    """Wraps a net that returns ``{"out": logits}`` into one that returns the logits.

    forward: B x 3 x H x W RGB images, 0-255 (uint8 or float) -> B x C x H x W logits.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB, 0-255 -> B x C x H x W logits."""
        return self.net(images)["out"]


def example_images(size: Sequence[int], *, batch: int = 1, dtype: str = "uint8") -> torch.Tensor:
    """Random RGB images as the data modules yield them: batch x 3 x H x W, values 0-255.

    Args:
        size: (height, width).
        batch: number of images.
        dtype: one of `INPUT_DTYPES`.

    Raises:
        ConfigError: for a dtype outside `INPUT_DTYPES`.
    """
    if dtype not in INPUT_DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported; allowed: {tuple(INPUT_DTYPES)}")
    images = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8)
    return images.to(INPUT_DTYPES[dtype])


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    size: Sequence[int] = (512, 1024),
    opset: int | None = None,
    dynamic: bool = True,
    dtype: str = "uint8",
) -> Path:
    """Exports with torch's ONNX exporter (``torch.export`` based).

    Args:
        model: images -> logits (see `LogitsModel`), in eval mode.
        path: the ``.onnx`` file to write.
        size: (height, width) of the example input.
        opset: ONNX opset; None: the exporter's default.
        dynamic: batch, height and width free in the graph (fixed: only batch).
        dtype: the input's element type, ``uint8`` (as images are stored) or
            ``float32``; values 0-255 either way.

    Input ``images`` (B x 3 x H x W RGB, 0-255), output ``logits`` (B x C x H x W).
    Adaptive pooling exports only as global pooling (output 1 x 1), which is what the
    ASPP image-pooling branch uses. `path` is replaced only by a complete export (see
    `replacing`).
    """
    path = Path(path)
    sample = example_images(size, dtype=dtype)
    dim = torch.export.Dim
    axes = {0: dim("batch", min=1, max=1024)}
    if dynamic:
        axes |= {2: dim("height", min=32, max=8192), 3: dim("width", min=32, max=8192)}
    with torch.no_grad(), replacing(path) as staged:
        torch.onnx.export(
            model.eval(),
            (sample,),
            str(staged),
            input_names=["images"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_shapes={"images": axes},
            dynamo=True,
            external_data=False,
        )
    return path


def export_torchscript(
    model: nn.Module, path: str | Path, *, size: Sequence[int] = (512, 1024)
) -> Path:
    """Traces to TorchScript (``torch.jit.load`` loads it, with no aspp-seg installed).

    The traced model takes B x 3 x H x W RGB images, 0-255, uint8 or float (the
    conversion to float is one traced op that does nothing for float input). `path` is
    replaced only by a complete export (see `replacing`).
    """
    path = Path(path)
    sample = example_images(size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        traced = torch.jit.trace(model.eval(), sample)
    with replacing(path) as staged:
        traced.save(str(staged))
    return path


def run_exported(path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Logits of an exported model: onnxruntime (CPU) for ``.onnx``, else TorchScript.

    Args:
        path: the exported file.
        images: B x 3 x H x W RGB, 0-255, in the type the export takes (ONNX fixes it).
    """
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError as error:
            raise UserError("checking an ONNX export needs onnxruntime: pip install "
                            "'aspp-seg[export]'") from error  # fmt: skip
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        graph_input = session.get_inputs()[0]
        given = f"tensor({str(images.dtype).removeprefix('torch.').replace('float32', 'float')})"
        if graph_input.type != given:
            raise UserError(
                f"{path} takes {graph_input.type} images (RGB 0-255), got {given}; "
                "see aspp_seg.evaluation.export.example_images"
            )
        outputs = session.run(None, {graph_input.name: images.numpy()})
        return torch.from_numpy(np.asarray(outputs[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(images)


def max_difference(model: nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest absolute difference between PyTorch's and the export's logits."""
    with torch.no_grad():
        expected = model.eval()(images)
    return float((run_exported(path, images) - expected).abs().max())
