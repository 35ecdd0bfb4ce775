"""One reader for configs: the parser of ``aspp-seg fit``, used by every command.

    config = read_config(["--config", "configs/dl1.yaml", "--data.init_args.root", root])
    datamodule = build_datamodule(config)          # layout checked later, not here
    net = build_net(config, num_classes=datamodule.num_classes)

`read_config` parses with `ConfigReader`, the `AsppSegCLI` that stops after parsing:
``config:`` includes, dotted keys, several ``--config`` and command-line overrides merge
exactly as ``aspp-seg fit`` merges them, and a run's saved ``config.yaml`` (with its
``ckpt_path`` key) is accepted. Nothing else in aspp-seg reads a config file. A
command adds its own options to that parser (`add_arguments`), so one command line
holds both. Only the parts a caller asks for are built: no trainer, logger or
LightningModule.
"""

from __future__ import annotations

import contextlib
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

    from aspp_seg.cli.lightning_cli import ConfigReader, lightning_cli, parse_error

    files, settings = [], False  # for the error: the config files, and any other setting
    for i, arg in enumerate(args):
        path = args[i + 1] if arg in ("-c", "--config") and i + 1 < len(args) else None
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"--config {path}: no such file")
        if path is not None:
            files.append(path)
        elif not (i and args[i - 1] in ("-c", "--config")):
            settings = True
    no_exit = {"exit_on_error": False}  # the error is raised, for the line below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jsonargparse's notes on optional types
            reader = lightning_cli(
                ["fit", *args],
                cli_class=ConfigReader,
                add_arguments=add_arguments,
                parser_kwargs={**no_exit, "fit": no_exit},
            )
    except ArgumentError as error:
        where = " + ".join(files) + (" and the command line" if settings and files else "")
        raise ConfigError(f"config {where or 'settings'}: {parse_error(str(error))}") from None
    return reader.config.fit


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


def instantiate(value: Namespace, base: type) -> object:
    """The object that a ``class_path`` / ``init_args`` setting of `read_config`'s result
    describes (e.g. ``config.model.inference``), checked to be a `base`."""
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
        return instantiate(config.data, LightningDataModule)


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
        net = instantiate(spec, nn.Module)
        if num_classes is not None and getattr(net, "num_classes", num_classes) != num_classes:
            net.reset_classifier(num_classes)
    return net
