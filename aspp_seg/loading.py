"""A trained model from Python: `load_model` and the `LoadedModel` it returns.

    import aspp_seg

    model = aspp_seg.load_model("runs/demo/version_0")       # or a .ckpt file
    labels = model.predict("photo.png")                      # H x W uint8 class indices
    colors = aspp_seg.evaluation.visualize.colorize(labels, model.palette)

The run's ``config.yaml`` (which ``aspp-seg fit`` writes beside ``checkpoints/``) is
read through `aspp_seg.cli.config.read_config`, the parser of ``fit`` itself; it gives the
network, the class names, the palette and the inference (``model.inference``: an
`aspp_seg.evaluation.inference.Inference` with its mode, scales, flip and output
stride), so `LoadedModel.predict` computes what ``aspp-seg predict`` writes. The data
set itself need not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.errors import ConfigError, UserError
from aspp_seg.evaluation.checkpoints import read_checkpoint, run_config

if TYPE_CHECKING:
    from aspp_seg.evaluation.inference import Inference


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint of a run folder (``checkpoints/last.ckpt``, else the newest
    ``*.ckpt``), or `path` itself when it is a file."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"load_model: {path} is neither a checkpoint nor a run folder")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"load_model: no *.ckpt in {folder}")
    return found[-1]


def run_config_of(checkpoint: str | Path, state: dict | None = None) -> Path:
    """The settings file of the checkpoint's run (`checkpoints.run_config`): after a
    resume with changed settings, the one the checkpoint's weights were trained under.

    Args:
        checkpoint: the ``.ckpt`` file.
        state: its contents, when already read (else it is read here).
    """
    state = read_checkpoint(checkpoint) if state is None else state
    found = run_config(checkpoint, state)
    if found is None:
        raise UserError(
            f"no config.yaml next to checkpoint {checkpoint} or in its run folder; give the "
            "run's config"
        )
    return found


def load_weights(net: nn.Module, checkpoint: dict, path: Path) -> None:
    """Loads the ``net.*`` entries of a Lightning checkpoint into `net`."""
    state = {
        key.removeprefix("net.").replace("_orig_mod.", ""): value  # compiled nets
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ConfigError(
            f"checkpoint {path} does not fit the net of its config ({first}); give the "
            "run's own config"
        ) from error


@dataclass
class LoadedModel:
    """A trained network with what it takes to use it.

    Attributes:
        net: the network, in eval mode: B x 3 x H x W RGB 0-255 (uint8 or float; it
            normalises them itself) ->
            ``{"out": B x C x H x W logits}``.
        class_names: the C class names, in output order.
        palette: RGB per class, for `aspp_seg.evaluation.visualize.colorize`.
        inference: how logits are computed (`aspp_seg.evaluation.inference.Inference`: whole
            image or sliding window, scales, flip; the net is already at its output
            stride), from the run's config.
        transform: the data module's evaluation transform (resize, if any), applied
            to files and H x W x 3 arrays as ``aspp-seg predict`` applies it.
        checkpoint: the weights' file.
        config: the run's configuration, as ``aspp-seg fit`` read it.
    """

    net: nn.Module
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    inference: Inference
    transform: object | None = None
    checkpoint: Path | None = None
    config: object = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        """Moves the network to `device`; returns self."""
        self.net.to(device)
        return self

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB images (0-255, uint8 or float) -> B x C x H x W logits."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be B x 3 x H x W, got {tuple(images.shape)}")
        inputs = images.to(self.device)
        return self.inference(lambda x: self.net(x)["out"], inputs)

    def predict(self, image: str | Path | np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Class indices per pixel, at the input's size.

        Args:
            image: an image file, an H x W x 3 uint8 RGB array, or a B x 3 x H x W
                tensor of RGB values in 0-255.

        Returns:
            H x W uint8 array for a file or an array; B x H x W uint8 tensor (on the
            model's device) for a tensor.
        """
        if isinstance(image, torch.Tensor):
            logits = self.logits(image)
            return logits.argmax(1).to(torch.uint8)
        if isinstance(image, (str, Path)):
            from aspp_seg.data.io import read_rgb

            image = read_rgb(image)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}")
        if self.transform is not None:
            tensor = self.transform(image=image)["image"]
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        logits = self.logits(tensor[None])
        if tuple(logits.shape[-2:]) != image.shape[:2]:
            logits = F.interpolate(
                logits, size=image.shape[:2], mode="bilinear", align_corners=False
            )
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def _palette(datamodule, class_names: Sequence[str]) -> list[tuple[int, int, int]]:
    from aspp_seg.data.datasets import cityscapes

    palette = getattr(datamodule, "palette", None)
    if palette:
        return [tuple(int(v) for v in color) for color in palette]
    if tuple(class_names) == cityscapes.CLASSES:
        return [tuple(color) for color in cityscapes.PALETTE]
    rng = np.random.default_rng(0)  # distinct, stable colours for classes without any
    return [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in class_names]


def load_model(
    path: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """A trained model from a run folder or a checkpoint of ``aspp-seg fit``.

    Args:
        path: a run folder (holding ``config.yaml`` and ``checkpoints/``) or a
            ``.ckpt`` file.
        config: the run's config; default: the ``config.yaml`` of the run.
        overrides: settings as on the command line, e.g.
            ``["--model.inference.init_args.flip", "true"]`` (inference settings may
            change; the network must fit the checkpoint).
        device: where the network runs.

    Raises:
        UserError: naming the checkpoint or config that is missing or does not fit.
    """
    from aspp_seg.cli import config as configs
    from aspp_seg.evaluation.inference import Inference

    checkpoint_path = find_checkpoint(path)
    checkpoint = read_checkpoint(checkpoint_path)  # a damaged file: one line naming it
    config_path = Path(config) if config is not None else run_config_of(checkpoint_path, checkpoint)
    run = configs.read_config(["--config", str(config_path), *overrides])
    hparams = checkpoint.get("hyper_parameters", {})
    try:
        datamodule = configs.build_datamodule(run)
    except UserError:
        datamodule = None  # e.g. a class table under a data root that is not here
    class_names = hparams.get("class_names") or getattr(datamodule, "class_names", None)
    num_classes = hparams.get("num_classes") or (len(class_names) if class_names else None)
    net = configs.build_net(run, num_classes=num_classes)
    load_weights(net, checkpoint, checkpoint_path)
    spec = run.model.get("inference")
    inference = Inference() if spec is None else configs.instantiate(spec, Inference)
    inference.check(net)
    inference.set_output_stride(net)  # the evaluation stride, if the run sets one
    class_names = list(class_names or getattr(net, "class_names", []) or range(num_classes))
    return LoadedModel(
        net=net.eval().to(device),
        class_names=[str(name) for name in class_names],
        palette=_palette(datamodule, class_names),
        inference=inference,
        transform=getattr(datamodule, "eval_tf", None),
        checkpoint=checkpoint_path,
        config=run,
    )
