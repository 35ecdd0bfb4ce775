"""Networks outside Lightning: built from a config, loaded from a checkpoint, exported.

    net = build_net("configs/dl1.yaml")                       # random weights
    net = load_network("runs/demo/version_0/checkpoints/last.ckpt")  # trained weights
    export_onnx(LogitsModel(net), "model.onnx", size=(1024, 2048))  # takes uint8 RGB

Exported networks take RGB images with values 0-255, B x 3 x H x W, as the data modules
yield them; they normalise inside (the net's ``pixel_mean`` / ``pixel_std``), so no
caller needs ImageNet's mean and std.

A config is read with aspp-seg's own LightningCLI parser (so includes such as
``config: base/study.yaml`` and dotted overrides work), but only ``model.net`` is built:
no data set, trainer or logger is touched. ``pretrained`` is forced off: a checkpoint
brings its own weights, and benchmarks need none.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from torch import nn

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


def _model_config(config: str | Path, overrides: Sequence[str] = ()) -> Namespace:
    """The ``model`` section of a run config, parsed as ``aspp-seg fit`` would."""
    from lightning.pytorch import LightningDataModule

    from aspp_seg.cli import AsppSegCLI
    from aspp_seg.module import SegmentationModule

    class _ParseOnly(AsppSegCLI):
        """Parses as ``aspp-seg fit`` (so a run's saved config.yaml, with its
        ``ckpt_path`` key, is accepted) but builds and runs nothing."""

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass  # no data layout check, no logger folder

        def after_instantiate_classes(self) -> None:
            self.subcommand = None  # run no subcommand

    if not Path(config).is_file():
        raise ConfigError(f"config file {config} not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LightningCLI warns about our own sys.argv
        cli = _ParseOnly(
            SegmentationModule,
            LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_callback=None,
            args=["fit", "--config", str(config), *overrides],
        )
    return cli.config.fit.model


def build_net(
    config: str | Path, overrides: Sequence[str] = (), *, num_classes: int | None = None
) -> nn.Module:
    """The ``model.net`` of a config, with random weights (``pretrained`` forced off).

    Args:
        config: a run config (``configs/*.yaml`` or a run's ``config.yaml``).
        overrides: extra command-line style settings, e.g.
            ``["--model.net.init_args.output_stride", "8"]``.
        num_classes: resize the classifier to this many classes.
    """
    model = _model_config(config, overrides)
    net_cfg = model.net.clone() if hasattr(model.net, "clone") else model.net
    init_args = getattr(net_cfg, "init_args", None)
    if init_args is not None and "pretrained" in init_args:
        init_args.pretrained = False
    parser = ArgumentParser()
    parser.add_argument("--net", type=nn.Module)
    parsed = parser.parse_object({"net": net_cfg.as_dict()})
    net = parser.instantiate_classes(parsed).net
    if num_classes is not None and getattr(net, "num_classes", num_classes) != num_classes:
        net.reset_classifier(num_classes)
    return net


def run_config_of(ckpt_path: str | Path) -> Path:
    """The ``config.yaml`` that ``aspp-seg fit`` saved in the checkpoint's run folder."""
    ckpt_path = Path(ckpt_path)
    for folder in (ckpt_path.parent, ckpt_path.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise UserError(
        f"no config.yaml next to checkpoint {ckpt_path} or in its run folder; give --config"
    )


def load_network(
    ckpt_path: str | Path, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> nn.Module:
    """A trained net from a Lightning checkpoint, in eval mode.

    Args:
        ckpt_path: a checkpoint written by ``aspp-seg fit``.
        config: the run's config; default: the ``config.yaml`` of the checkpoint's run.
        overrides: extra settings for the config.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise UserError(f"checkpoint {ckpt_path} not found")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    num_classes = checkpoint.get("hyper_parameters", {}).get("num_classes")
    net = build_net(config or run_config_of(ckpt_path), overrides, num_classes=num_classes)
    state = {
        key[len("net.") :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    state = {key.replace("_orig_mod.", ""): value for key, value in state.items()}  # compiled
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UserError(
            f"checkpoint {ckpt_path} does not fit the net of the config ({first}); "
            "give the run's own --config"
        ) from error
    return net.eval()


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
    ASPP image-pooling branch uses.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = example_images(size, dtype=dtype)
    dim = torch.export.Dim
    axes = {0: dim("batch", min=1, max=1024)}
    if dynamic:
        axes |= {2: dim("height", min=32, max=8192), 3: dim("width", min=32, max=8192)}
    with torch.no_grad():
        torch.onnx.export(
            model.eval(),
            (sample,),
            str(path),
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
    conversion to float is one traced op that does nothing for float input).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = example_images(size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        traced = torch.jit.trace(model.eval(), sample)
    traced.save(str(path))
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
                "see aspp_seg.export.example_images"
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
