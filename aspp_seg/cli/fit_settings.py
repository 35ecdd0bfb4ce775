"""Settings that torch or Lightning would refuse, or accept and train nothing with, only
after the net and data are built: checked on the parsed ``fit`` config, before either is
built (`aspp_seg.cli.lightning_cli.AsppSegCLI` runs `check_fit_settings`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aspp_seg.errors import ConfigError

if TYPE_CHECKING:
    from jsonargparse import Namespace


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
