"""Weights from files on disk: a timm backbone checkpoint, or a whole net's weights.

Two settings use this module:

- ``pretrained: PATH`` of the builders (`TimmBackbone`): a timm checkpoint of the
  backbone (``.pth`` or ``.safetensors``, as timm's ``train.py`` or
  ``torch.save(model.state_dict())`` write it); the classifier (``fc``) is not needed.
- ``model.init_weights: PATH`` of the training module: a whole net, from an aspp-seg
  checkpoint, a torchvision DeepLabV3 state dict (ported by `aspp_seg.models.port`) or
  a state dict of our net (`load_net_weights`).

Files are data: ``.pth`` files load with ``torch.load(weights_only=True)``,
``.safetensors`` with the ``safetensors`` package (both through timm's
``load_state_dict``, which also takes the EMA / ``state_dict`` / ``model`` entry of a
training checkpoint and strips DDP's ``module.`` prefix). A file whose tensors do not
fit is one `ConfigError` naming the setting, the file and the first few keys at fault.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models.port import TORCHVISION_SETTINGS, torchvision_to_ours

SHOWN_KEYS = 3
"""Keys named per kind of mismatch in an error; the rest are counted."""

AUX_PREFIX = "aux_head."
"""The training-only head: loaded when both sides have one, else left out (file) or
left freshly initialised (net)."""


def check_weights_file(path: str | Path, *, setting: str) -> Path:
    """`path` as a Path, or a one-line ConfigError naming `setting` when it is no file."""
    found = Path(path).expanduser()
    if not found.exists():
        raise ConfigError(f"{setting} {path}: no such file")
    if not found.is_file():
        raise ConfigError(f"{setting} {path} is a folder; give a weights file (.pth, .safetensors)")
    return found


def read_state_dict(path: str | Path, *, setting: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read as data (no code runs).

    Args:
        path: a ``.safetensors`` file, or a ``.pth`` / ``.pt`` / ``.bin`` file holding a
            state dict, or a training checkpoint with one under ``state_dict_ema``,
            ``model_ema``, ``state_dict`` or ``model``.
        setting: the setting that named the file, for errors (e.g. ``pretrained``).

    Raises:
        ConfigError: one line naming `setting` and `path` when the file is missing, is
            not a weights file, or asks to load Python objects that are not data.
    """
    found = check_weights_file(path, setting=setting)
    try:
        state = load_state_dict(str(found), use_ema=True, weights_only=True)
    except Exception as error:  # torch / safetensors name a damaged file in many ways
        if isinstance(error.__cause__ or error, pickle.UnpicklingError):  # timm wraps it
            try:
                wanted = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(found))
            except Exception:  # a file too damaged to scan
                wanted = ""
            raise ConfigError(
                f"{setting} {path} is refused: it asks to load {wanted or 'Python objects'}, "
                "which is code, not data (weights load with torch.load(weights_only=True))"
            ) from None
        text = str(error).strip().splitlines()
        reason = text[0][:160] if text else type(error).__name__
        raise ConfigError(
            f"{setting} {path} is not a weights file (.pth state dict or .safetensors): {reason}"
        ) from None
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{setting} {path} holds no state dict (a mapping of names to tensors)")
    return dict(state)


def describe_mismatch(
    missing: list[str], unexpected: list[str], shapes: dict[str, tuple[list, list]]
) -> str:
    """One line naming the first `SHOWN_KEYS` keys of each kind, then how many more."""
    parts = []
    if missing:
        parts.append(f"missing from the file: {_few(missing)}")
    if unexpected:
        parts.append(f"not in the net: {_few(unexpected)}")
    if shapes:
        named = [f"{k} {shapes[k][0]} in the file, {shapes[k][1]} in the net" for k in shapes]
        parts.append(f"other shape: {_few(named)}")
    return "; ".join(parts)


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    more = len(items) - SHOWN_KEYS
    return f"{shown} and {more} more" if more > 0 else shown


def _compare(
    file: Mapping[str, torch.Tensor],
    net: Mapping[str, torch.Tensor],
    *,
    skip: tuple[str, ...] = (),
) -> str:
    """The mismatches between a file's and a net's tensors (empty when they fit), keys
    under the prefixes in `skip` left out on both sides."""
    missing = sorted(k for k in net if k not in file and not k.startswith(skip) and _required(k))
    unexpected = sorted(k for k in file if k not in net and not k.startswith(skip))
    shapes = {
        k: (list(file[k].shape), list(net[k].shape))
        for k in sorted(file)
        if k in net and not k.startswith(skip) and file[k].shape != net[k].shape
    }
    return describe_mismatch(missing, unexpected, shapes)


def _required(key: str) -> bool:
    # BatchNorm counts its steps; torch fills the count in when a file lacks it
    return not key.endswith("num_batches_tracked")


def check_backbone_weights(
    state: Mapping[str, torch.Tensor], name: str, *, path: str | Path, **create_kwargs
) -> None:
    """Raises a one-line ConfigError unless `state` holds timm model `name`'s tensors.

    The file is compared with the whole timm model (built on the meta device: no memory,
    no weights), since timm loads a file into it before keeping the feature stages; the
    ImageNet classifier (``pretrained_cfg["classifier"]``) is optional on both sides.
    """
    create_kwargs.pop("out_indices", None)  # a features_only setting
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **create_kwargs)
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    problem = _compare(state, model.state_dict(), skip=tuple(f"{c}." for c in classifier))
    if problem:
        raise ConfigError(
            f"pretrained {path} does not fit backbone {name!r}: {problem} (give a timm "
            f"checkpoint of {name}, e.g. torch.save(timm.create_model({name!r}).state_dict()))"
        )


def net_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """A whole net's tensors under our names, and where they came from.

    Args:
        state: a LightningModule's state dict (the net under ``net.``, as aspp-seg's
            checkpoints hold it), a torchvision DeepLabV3 state dict, or our net's own.

    Returns:
        The state dict with our net's keys (``_orig_mod.`` of a compiled net removed) and
        the kind: ``aspp-seg``, ``torchvision`` or ``state dict``.
    """
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        kind = "aspp-seg"
    elif any(k.startswith("classifier.0.convs.") for k in state):  # torchvision's ASPP
        state, kind = torchvision_to_ours(state), "torchvision"
    else:
        kind = "state dict"
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}, kind


def load_net_weights(
    net: nn.Module, state: Mapping[str, torch.Tensor], *, source: str
) -> tuple[int, int] | None:
    """Loads a whole net's weights into `net` in place, classifiers excepted when the
    file has another number of classes (they keep `net`'s fresh initialisation).

    An aux head (``aux_head.``) on one side only is left out: it is used in training only.

    Args:
        net: the network, built with the classes it will train on.
        state: the file's tensors (see `net_state_dict` for the layouts it reads).
        source: the setting and file, for messages (``--model.init_weights run.ckpt``).

    Returns:
        None when every tensor was loaded; else (classes in the file, classes of the
        net), the classifiers having been left as they were.

    Raises:
        ConfigError: one line naming `source` and the keys that do not fit (missing,
            unexpected, or of another shape, classifiers excepted).
    """
    state, kind = net_state_dict(state)
    ours = net.state_dict()
    classifiers = tuple(
        f"{name}." for name, _ in net.named_modules() if name.rsplit(".", 1)[-1] == "classifier"
    )
    if not any(k.startswith(AUX_PREFIX) for k in ours):
        state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX)}
    skip = () if any(k.startswith(AUX_PREFIX) for k in state) else (AUX_PREFIX,)
    other_classes = {
        k: int(state[k].shape[0])
        for k in state
        if k.startswith(classifiers)
        and k in ours
        and state[k].shape[0] != ours[k].shape[0]
        and state[k].shape[1:] == ours[k].shape[1:]
    }
    state = {k: v for k, v in state.items() if k not in other_classes}
    problem = _compare(state, {k: v for k, v in ours.items() if k not in other_classes}, skip=skip)
    if problem:
        hint = {
            "aspp-seg": "build the net as the file's run did (its config.yaml)",
            "torchvision": f"torchvision's DeepLabV3 needs {TORCHVISION_SETTINGS}",
            "state dict": "build the net with the settings the file was trained with",
        }[kind]
        raise ConfigError(f"{source} does not fit the net ({kind}): {problem}; {hint}")
    net.load_state_dict(state, strict=False)
    if not other_classes:
        return None
    key = min(other_classes)  # e.g. head.classifier.bias: its first dimension counts classes
    return other_classes[key], int(ours[key].shape[0])
