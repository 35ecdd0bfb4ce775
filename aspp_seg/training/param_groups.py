"""Optimizer parameter groups from YAML: an LR multiplier and a weight decay per part of
the net, and weight decay on or off for norms and biases.

DeepLab codebases train parts at different rates: torchvision's reference trains the
aux head at 10x the LR, VainF's DeepLabV3Plus the backbone at 0.1x; timm's
``param_groups_weight_decay`` leaves norms and biases undecayed. A part is a top-level
child of the net (DeepLabV3: ``backbone``, ``head``, ``aux_head``; SegNet: its own).

    model:
      param_groups:
        aux_head: {lr_mult: 10}
        backbone: {lr_mult: 0.1, weight_decay: 1.0e-4}
      norm_bias_weight_decay: false

The optimizer stays injected: it is called with these groups, each group's LR is then
its own LR (the optimizer's) times ``lr_mult``, before any scheduler sees it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torch.optim import Optimizer

from aspp_seg.errors import ConfigError

GROUP_SETTINGS = ("lr_mult", "weight_decay")


def check_param_groups(net: nn.Module, parts: Mapping[str, Mapping[str, float]] | None) -> None:
    """Raises a ConfigError naming a part the net does not have, or an unknown setting."""
    children = [name for name, _ in net.named_children()]
    for part, settings in (parts or {}).items():
        if part not in children:
            raise ConfigError(
                f"model.param_groups.{part}: {type(net).__name__} has no part {part!r}; "
                f"its parts: {children}"
            )
        unknown = set(settings) - set(GROUP_SETTINGS)
        if unknown:
            raise ConfigError(
                f"model.param_groups.{part}: unknown setting {sorted(unknown)[0]!r}; "
                f"allowed: {GROUP_SETTINGS}"
            )
        if settings.get("lr_mult", 1.0) < 0 or settings.get("weight_decay", 0.0) < 0:
            raise ConfigError(f"model.param_groups.{part}: lr_mult and weight_decay must be >= 0")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """timm's rule: 1-D tensors (norm weights and biases) and biases are not decayed."""
    return param.ndim <= 1 or name.endswith(".bias")


def build_param_groups(
    module: nn.Module,
    net: nn.Module,
    parts: Mapping[str, Mapping[str, float]] | None = None,
    *,
    norm_bias_weight_decay: bool = True,
) -> list[dict]:
    """The parameter groups of `module` (the net and anything else with parameters).

    Args:
        module: whose parameters to group (every trainable one is in exactly one group).
        net: the part of `module` whose top-level children are the parts.
        parts: settings per part (``lr_mult``, ``weight_decay``); other parts keep the
            optimizer's own.
        norm_bias_weight_decay: False puts norm weights and biases in groups with weight
            decay 0.

    Returns:
        Groups in a fixed order, each with ``params``, ``name`` (the LR's name in the
        logs: ``lr-SGD/aux_head``), ``lr_mult`` and, where set, ``weight_decay``. One
        unnamed group holding every parameter when nothing is set.
    """
    parts = dict(parts or {})
    check_param_groups(net, parts)
    owner = {id(p): name for name, child in net.named_children() for p in child.parameters()}
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        part = owner.get(id(param), "")
        part = part if part in parts else ""  # parts without settings share one group
        no_decay = not norm_bias_weight_decay and _no_decay(name, param)
        key = (part, no_decay)
        if key not in groups:
            settings = parts.get(part, {})
            group = {"params": [], "name": (part or "default") + ("_no_decay" if no_decay else "")}
            group["lr_mult"] = float(settings.get("lr_mult", 1.0))
            if no_decay:
                group["weight_decay"] = 0.0
            elif "weight_decay" in settings:
                group["weight_decay"] = float(settings["weight_decay"])
            groups[key] = group
        groups[key]["params"].append(param)
    found = list(groups.values())
    if len(found) == 1:  # one group: LearningRateMonitor logs it as plain `lr-<optimizer>`
        del found[0]["name"]
    return found


def apply_lr_mults(optimizer: Optimizer) -> None:
    """Each group's LR times its ``lr_mult`` (once, before a scheduler is built)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_mult", 1.0)
