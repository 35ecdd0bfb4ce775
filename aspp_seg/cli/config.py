"""One reader for configs: the parser of ``aspp-seg fit``, used by every command.

    config = read_config(["--config", "configs/dl1.yaml", "--data.init_args.root", root])
    datamodule = build_datamodule(config)          # layout checked later, not here
    net = build_net(config, num_classes=datamodule.num_classes)

`read_config` parses with the parser that `AsppSegCLI` builds for ``fit``: ``config:``
includes, dotted keys, several ``--config`` and command-line overrides merge exactly as
``aspp-seg fit`` merges them, and a run's saved ``config.yaml`` (with its
``ckpt_path`` key) is accepted. Nothing else in aspp-seg reads a config file. A
command adds its own options to that parser (`add_arguments`), so one command line
holds both. Only the parts a caller asks for are built: no trainer, logger or
LightningModule.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aspp_seg.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from jsonargparse import ArgumentParser, Namespace
    from lightning.pytorch import LightningDataModule
    from torch import nn

AddArguments = Callable[["ArgumentParser"], None]
"""Adds a command's own options to a parser (the fit parser, or the help-only one)."""

CONFIG_HELP = (
    "a fit config (YAML); give several to merge them as `aspp-seg fit` does. Every other "
    "`aspp-seg fit` option is accepted too, e.g. --data.init_args.root DIR"
)


class _ParserBuilt(Exception):
    """Carries the parser out of LightningCLI's constructor, before it parses."""

    def __init__(self, parser) -> None:
        super().__init__("parser built")
        self.parser = parser


def _no_arguments(parser) -> None:
    pass


@functools.cache
def _parser(add_arguments: AddArguments) -> ArgumentParser:
    """``aspp-seg``'s full parser, as `AsppSegCLI` builds it, with `add_arguments` applied
    to every subcommand's parser (cached: building it takes a second)."""
    from aspp_seg.cli.lightning_cli import AsppSegCLI, lightning_cli

    class _ParserOnly(AsppSegCLI):
        def add_arguments_to_parser(self, parser) -> None:
            super().add_arguments_to_parser(parser)
            add_arguments(parser)

        def parse_arguments(self, parser, args) -> None:
            raise _ParserBuilt(parser)

    no_exit = {"exit_on_error": False}
    try:
        lightning_cli([], cli_class=_ParserOnly, parser_kwargs={**no_exit, "fit": no_exit})
    except _ParserBuilt as built:
        return built.parser
    raise AssertionError("LightningCLI parsed without calling parse_arguments")


def read_config(args: Sequence[str], *, add_arguments: AddArguments | None = None) -> Namespace:
    """`args` parsed as ``aspp-seg fit <args>`` would parse them.

    Args:
        args: command-line style settings: ``--config FILE`` (several allowed),
            ``--data.init_args.root DIR``, ...
        add_arguments: adds the calling command's own options to the parser.

    Returns:
        The fit configuration (``trainer``, ``model``, ``data``, ...), plus the
        command's own options.

    Raises:
        ConfigError: one line naming the file or setting that does not parse.
    """
    from jsonargparse import ArgumentError

    parser = _parser(add_arguments or _no_arguments)
    for i, arg in enumerate(args):
        path = args[i + 1] if arg in ("-c", "--config") and i + 1 < len(args) else None
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"--config {path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jsonargparse's notes on optional types
            return parser.parse_args(["fit", *args]).fit
    except ArgumentError as error:
        # jsonargparse explains over several lines (one per subclass it tried)
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        text = text if len(text) <= 400 else text[:397] + "..."
        raise ConfigError(f"config {' '.join(args)}: {text}") from None


def wants_help(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for help (answered without building the fit parser)."""
    return any(arg in ("-h", "--help") for arg in argv)


def print_help(prog: str, description: str, add_arguments: AddArguments) -> None:
    """Help of a command that reads a fit config: ``--config`` and its own options.

    Built on a plain jsonargparse parser, so it imports neither Lightning nor torch.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=str, help=CONFIG_HELP)
    add_arguments(parser)
    parser.print_help()


def _instantiate(value: Namespace, base: type) -> object:
    """The object that a ``class_path`` / ``init_args`` setting describes."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=base)
    return parser.instantiate_classes(parser.parse_object({"value": value.as_dict()})).value


def build_datamodule(config: Namespace) -> LightningDataModule:
    """The config's data module, with its layout check deferred (no data set has to
    exist until it sets up).

    Args:
        config: from `read_config`.
    """
    from lightning.pytorch import LightningDataModule

    from aspp_seg.data.datamodules import layout_check_deferred

    with layout_check_deferred():
        return _instantiate(config.data, LightningDataModule)


def build_net(
    config: Namespace,
    *,
    num_classes: int | None = None,
    pretrained: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """The config's ``model.net``: the network `fit` trains.

    Args:
        config: from `read_config`.
        num_classes: resize the classifier to this many classes (``fit`` uses the data
            module's); None: the builder's own.
        pretrained: keep the config's ``pretrained`` setting; off by default, since a
            checkpoint brings its own weights and structure checks need none (the
            architecture is the same either way).
        device: where to build; ``"meta"`` allocates no memory (structure, parameter
            counts, FLOPs).
    """
    import torch
    from torch import nn

    spec = config.model.net.clone()
    init_args = getattr(spec, "init_args", None)
    if not pretrained and init_args is not None:
        if "pretrained" in init_args:
            init_args.pretrained = False
        if getattr(init_args, "torchvision_weights", None) is not None:
            init_args.torchvision_weights = None  # a file of weights, not structure
    with torch.device(device) if device is not None else contextlib.nullcontext():
        net = _instantiate(spec, nn.Module)
        if num_classes is not None and getattr(net, "num_classes", num_classes) != num_classes:
            net.reset_classifier(num_classes)
    return net
