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

Settings of aspp-seg 0.2 that moved (`OLD_MODEL_SETTINGS`: the flat inference keys of
``model``, its LR scaling and ``predict_dir``) are read at their new place, with one
warning line, wherever they come from: a config file such as a run's saved
``config.yaml`` (`translate_config`), the command line (`translate_args`) or a
checkpoint's hyperparameters (`translate_hparams`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


INFERENCE_CLASS = "aspp_seg.evaluation.inference.Inference"

OLD_MODEL_SETTINGS = {
    "inference": "model.inference.init_args.mode",
    "window": "model.inference.init_args.window",
    "stride": "model.inference.init_args.stride",
    "scales": "model.inference.init_args.scales",
    "flip": "model.inference.init_args.flip",
    "window_batch": "model.inference.init_args.batch_size",
    "eval_output_stride": "model.inference.init_args.output_stride",
    "lr_scaling": "lr_scaling.rule",
    "lr_base_batch_size": "lr_scaling.base_batch_size",
    "predict_dir": "predict_dir",
}
"""``model`` settings of aspp-seg 0.2 -> where they are now: the inference settings in
the injected `Inference` (``model.inference``), LR scaling in the `LRScaling` callback's
section, the prediction folder an option of ``aspp-seg predict``."""

_OLD_MODES = ("whole", "slide")  # an old `model.inference` is a mode, not a class


class MovedSettingWarning(FutureWarning):
    """A setting of an earlier aspp-seg read at its new place."""


def _is_old(key: str, value: Any) -> bool:
    return key in OLD_MODEL_SETTINGS and (key != "inference" or value in _OLD_MODES)


def _warn_moved(where: str, moved: dict[str, str]) -> None:
    pairs = "; ".join(f"model.{old} -> {new}" for old, new in moved.items())
    warnings.warn(
        f"{where}: {pairs} (aspp-seg 0.2 settings, read at their new place: update it)",
        MovedSettingWarning,
        stacklevel=3,
    )


def _target(new: str, predict_dir: bool) -> str:
    return new if new != "predict_dir" or predict_dir else "dropped (aspp-seg predict only)"


def translate_config(config: dict, *, where: str = "config", predict_dir: bool = True) -> dict:
    """`config` (one config file's content) with the settings of `OLD_MODEL_SETTINGS`,
    nested under ``model:`` or dotted (``model.flip: true``), moved to their new place;
    warns once naming them. Returns `config` itself when it holds none.

    Args:
        config: the file's mapping (not changed).
        where: the file, for the warning.
        predict_dir: whether the parser has ``predict_dir`` (``aspp-seg predict``);
            elsewhere an old ``model.predict_dir`` is dropped.
    """
    model = config.get("model") if isinstance(config.get("model"), dict) else None
    nested = {k: v for k, v in (model or {}).items() if _is_old(k, v)}
    dotted = {
        key[len("model.") :]: value
        for key, value in config.items()
        if key.startswith("model.") and _is_old(key[len("model.") :], value)
    }
    if not nested and not dotted:
        return config
    old = {**dotted, **nested}
    config = {k: v for k, v in config.items() if not (k.startswith("model.") and k[6:] in dotted)}
    if model is not None:
        config["model"] = {k: v for k, v in model.items() if k not in nested}
    inference = {
        OLD_MODEL_SETTINGS[k].rsplit(".", 1)[1]: v
        for k, v in old.items()
        if OLD_MODEL_SETTINGS[k].startswith("model.inference.")
    }
    if inference:
        place, key = (
            (config["model"], "inference") if model is not None else (config, "model.inference")
        )
        current = place.get(key) if isinstance(place.get(key), dict) else {}
        place[key] = {
            "class_path": current.get("class_path", INFERENCE_CLASS),
            "init_args": {**inference, **(current.get("init_args") or {})},
        }
    scaling = {
        OLD_MODEL_SETTINGS[k].rsplit(".", 1)[1]: v
        for k, v in old.items()
        if OLD_MODEL_SETTINGS[k].startswith("lr_scaling.")
    }
    if scaling:
        current = config.get("lr_scaling") if isinstance(config.get("lr_scaling"), dict) else {}
        config["lr_scaling"] = {**scaling, **current}
    if "predict_dir" in old and predict_dir and config.get("predict_dir") is None:
        config["predict_dir"] = old["predict_dir"]
    _warn_moved(where, {k: _target(OLD_MODEL_SETTINGS[k], predict_dir) for k in old})
    return config


def translate_args(args: Sequence[str]) -> list[str]:
    """Command-line `args` with the flags of `OLD_MODEL_SETTINGS` (``--model.flip true``,
    ``--model.window=[..]``, ``--model.inference slide``) at their new place; warns
    once naming them. ``--model.predict_dir`` is ``--predict_dir`` of ``predict`` and
    dropped elsewhere."""
    args = list(args)
    subcommand = next((a for a in args if a in ("fit", "validate", "test", "predict")), None)
    out, moved, i = [], {}, 0
    while i < len(args):
        arg = args[i]
        key, equals, value = arg.partition("=")
        name = key[len("--model.") :] if key.startswith("--model.") else None
        has_value = bool(equals) or i + 1 < len(args)
        value = value if equals else (args[i + 1] if i + 1 < len(args) else None)
        if name is None or not has_value or not _is_old(name, value):
            out.append(arg)
            i += 1
            continue
        new = _target(OLD_MODEL_SETTINGS[name], subcommand == "predict")
        moved[name] = new
        if not new.startswith("dropped"):
            out.append(f"--{new}={value}" if equals else f"--{new}")
            if not equals:
                out.append(value)
        i += 1 if equals else 2
    if moved:
        _warn_moved("command line", moved)
    return out


_OLD_HPARAM_DEFAULTS = {"eval_output_stride": None, "lr_scaling": "none", "lr_base_batch_size": 8}


def translate_hparams(hparams: dict, *, where: str) -> dict:
    """A checkpoint's hyperparameters without the model settings of aspp-seg 0.2 (which
    LightningCLI would apply over the config): how to evaluate and how to scale the LR
    come from the config, never from a checkpoint. A value other than the old default
    is named in one warning line, with the setting that now holds it."""
    old = {k: hparams[k] for k in _OLD_HPARAM_DEFAULTS if k in hparams}
    if not old:
        return hparams
    unapplied = {k: OLD_MODEL_SETTINGS[k] for k, v in old.items() if v != _OLD_HPARAM_DEFAULTS[k]}
    if unapplied:
        values = ", ".join(f"{k}={old[k]!r}" for k in unapplied)
        warnings.warn(
            f"{where} holds {values} (aspp-seg 0.2 model settings), not applied from the "
            f"checkpoint: set {', '.join(unapplied.values())} (the run's config.yaml has it)",
            MovedSettingWarning,
            stacklevel=2,
        )
    return {k: v for k, v in hparams.items() if k not in old}


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jsonargparse's notes on optional types
            warnings.simplefilter("default", MovedSettingWarning)
            return parser.parse_args(["fit", *args]).fit
    except ArgumentError as error:
        where = " + ".join(files) + (" and the command line" if settings and files else "")
        raise ConfigError(f"config {where or 'settings'}: {parse_error(str(error))}") from None


def parse_error(message: str) -> str:
    """jsonargparse's explanation (over several lines, one per subclass it tried) as one
    line of at most 400 characters."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= 400 else text[:397] + "..."


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


# Settings that torch or Lightning would refuse, or accept and train nothing with, only
# after the net and data are built: checked on the parsed config, before either is built.


def check_fit_settings(config: Namespace) -> None:
    """Refuses, in one line naming the setting, a fit that would train nothing or whose
    optimizer settings torch would refuse (after the net and data are built).

    Args:
        config: the parsed ``fit`` config (`read_config`, or LightningCLI's).

    Raises:
        ConfigError: naming the setting and its allowed values.
    """
    check_training_length(config.get("trainer") or {})
    model = config.get("model") or {}
    check_optimizer(model.get("optimizer"))
    for part, values in (model.get("param_groups") or {}).items():
        for key, value in (values or {}).items():
            if _is_number(value) and value < 0:
                raise ConfigError(f"model.param_groups.{part}.{key}={value!r} must be >= 0")


def check_training_length(trainer) -> None:
    """``trainer.max_epochs`` / ``max_steps`` / ``limit_train_batches`` / ``max_time``
    that would stop a fit before its first step (Lightning ends such a fit with exit
    status 0 and no weights changed), or that Lightning refuses with a traceback."""
    for key in ("max_epochs", "max_steps"):
        value = trainer.get(key)
        if value == 0:
            raise ConfigError(
                f"trainer.{key}=0 trains nothing: give a positive count (or -1 for no limit); "
                "to evaluate a checkpoint use aspp-seg validate --ckpt_path"
            )
        if _is_number(value) and value < -1:
            raise ConfigError(f"trainer.{key}={value} must be a positive count or -1 (no limit)")
    batches = trainer.get("limit_train_batches")
    if _is_number(batches) and batches <= 0:
        raise ConfigError(
            f"trainer.limit_train_batches={batches} trains nothing: give a fraction in (0, 1] "
            "or a number of batches >= 1"
        )
    max_time = trainer.get("max_time")
    if isinstance(max_time, str) and max_time.replace(":", "").strip("0") == "":
        raise ConfigError(f"trainer.max_time={max_time} trains nothing: give a longer time")
    if hasattr(max_time, "values") and not any(max_time.values()):
        raise ConfigError(f"trainer.max_time={dict(max_time)} trains nothing: give a longer time")


_UNIT_INTERVAL = ("momentum", "betas")  # each value in [0, 1)
_NON_NEGATIVE = ("weight_decay", "eps", "dampening")


def check_optimizer(spec) -> None:
    """The optimizer's settings (``model.optimizer``: ``class_path`` + ``init_args``)
    checked before anything is built: a learning rate > 0; weight decay, eps and
    dampening >= 0; momentum and betas in [0, 1); then the optimizer itself is built on
    one placeholder parameter, so that any other value it refuses is refused now, with
    its own words.

    Raises:
        ConfigError: naming the setting (``model.optimizer.init_args.lr=-0.1 ...``).
    """
    init_args = spec.get("init_args") if hasattr(spec, "get") else None
    if init_args is None:
        return
    where = "model.optimizer.init_args"
    lr = init_args.get("lr")
    if _is_number(lr) and lr <= 0:
        trains = "trains nothing" if lr == 0 else "would climb the loss"
        raise ConfigError(f"{where}.lr={lr} {trains}: the learning rate must be > 0")
    for key in _NON_NEGATIVE:
        value = init_args.get(key)
        if _is_number(value) and value < 0:
            raise ConfigError(f"{where}.{key}={value} must be >= 0")
    for key in _UNIT_INTERVAL:
        value = init_args.get(key)
        values = value if isinstance(value, list | tuple) else [value]
        if any(_is_number(v) and not 0 <= v < 1 for v in values):
            raise ConfigError(f"{where}.{key}={_plain(value)} must be in [0, 1)")
    _try_optimizer(spec.get("class_path"), init_args, where)


def _try_optimizer(class_path, init_args, where: str) -> None:
    """Builds the optimizer on one placeholder parameter; a ValueError (torch's
    ``Invalid ... value``, ``Nesterov momentum requires ...``) becomes a ConfigError."""
    import importlib

    import torch

    module, _, name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return  # the parser named it already, or it builds something else
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        return
    # device-specific switches are checked against the real parameters' device later
    kwargs = {
        k: v for k, v in dict(init_args).items() if k not in ("fused", "foreach", "capturable")
    }
    try:
        cls([torch.zeros(1, requires_grad=True)], **kwargs)
    except ValueError as error:
        raise ConfigError(f"{where} ({name}): {error}") from None
    except Exception:  # anything else is left to the real build, which names it
        return


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
