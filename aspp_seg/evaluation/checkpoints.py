"""Checkpoints given with ``--ckpt_path``: checked before Lightning reads them, and
read as data only (`read_checkpoint`, which every reader of a checkpoint uses, Lightning's
own restore included: `aspp_seg.training.checkpoint_io`).

A path that does not exist, a file that is not a checkpoint, or a checkpoint whose
tensors do not fit the configured network would otherwise end in a long traceback
from ``torch.load`` or ``load_state_dict``; here each is one `ConfigError` that names
the file and, for a network of another shape, the first tensor that differs and the
run's own ``config.yaml`` that would fit.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from aspp_seg.errors import ConfigError

CHECKPOINT_KEY = "aspp_seg"
"""Key of aspp-seg's own entries in a Lightning checkpoint (W&B run id, schedule
length, the run's config file)."""

SAFE_FUNCTIONS = (
    "aspp_seg.training.module.study_sgd",
    "aspp_seg.training.module.poly_schedule",
)
"""The only Python objects beyond torch's safe types that a checkpoint may name: the
default optimizer and schedule of `SegmentationModule`, which Lightning records as its
hyperparameters when the module is built in Python (``aspp-seg`` records them as data).
Allowed by name, imported only for a checkpoint that names them; calling them makes an
optimizer or a schedule and nothing else."""

SPECIAL_PATHS = ("last", "best", "hpc")
"""``--ckpt_path`` values that Lightning (or `aspp_seg.training.resume`) resolves itself."""


def is_file_path(ckpt_path: object) -> bool:
    """Whether `ckpt_path` names a file (not None, ``last``, ``best``, a registry ...)."""
    if not isinstance(ckpt_path, str | Path):
        return False
    text = str(ckpt_path)
    return text not in SPECIAL_PATHS and not text.startswith("registry")


def read_checkpoint(
    path: str | Path, *, map_location: object = "cpu", setting: str = "--ckpt_path"
) -> dict:
    """The checkpoint at `path` as data, memory-mapped (tensors are read only when used).

    It is loaded with ``torch.load(weights_only=True)`` and nothing else: a checkpoint
    cannot run code. What aspp-seg and Lightning store in one is plain data (dicts,
    lists, strings, numbers, tensors: the hyperparameters as the config gives them, the
    optimizer, schedule, loop and callback states, EMA weights, W&B id); a file that asks
    for any other Python object (a class, a function) is refused, whoever wrote it.

    Args:
        path: the ``.ckpt`` file.
        map_location: where tensors go (`torch.load`'s argument).
        setting: the setting that named the file, for errors (``--model.init_weights``).

    Raises:
        ConfigError: naming `path` when it is missing, a folder, not a Lightning
            checkpoint, or asks for a Python object that is not data (named).
    """
    import pickle

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{setting} {path}: no such file")
    if path.is_dir():
        raise ConfigError(f"{setting} {path} is a folder; give a .ckpt file in it")
    try:
        state = _load_weights_only(path, map_location)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise _not_a_checkpoint(path, error, setting) from None
        raise refused(path, error) from None
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise _not_a_checkpoint(path, error, setting) from None
        raise ConfigError(
            f"{setting} {path} is not a PyTorch checkpoint (not the zip format that "
            "torch.save and Lightning write)"
        ) from None
    except OSError as error:
        if error.errno is None:  # torch's own "not a checkpoint" errors
            raise _not_a_checkpoint(path, error, setting) from None
        raise ConfigError(f"cannot read checkpoint {path}: {error.strerror}") from None
    except (EOFError, ValueError) as error:
        raise _not_a_checkpoint(path, error, setting) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"{setting} {path} is not a Lightning checkpoint (no state_dict)")
    return state


def _load_weights_only(path: Path, map_location: object) -> object:
    """``torch.load(weights_only=True)``; a checkpoint that names `SAFE_FUNCTIONS` (and no
    other global) is loaded the same way with exactly those allowed."""
    import pickle

    import torch

    def load():
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)

    try:
        return load()
    except pickle.UnpicklingError:
        wanted = _unsafe_globals(path)
        if not wanted or not set(wanted) <= set(SAFE_FUNCTIONS):
            raise
        with torch.serialization.safe_globals([_function(name) for name in wanted]):
            return load()


def refused(path: str | Path, error: Exception, wanted: list[str] | None = None) -> ConfigError:
    """The one-line refusal of a checkpoint that `torch.load(weights_only=True)` refused
    (`error`): it names the Python objects the file asks for (`wanted`: torch's own scan
    of the file, else the global that torch's message names)."""
    wanted = wanted if wanted is not None else _unsafe_globals(path)
    if not wanted:
        wanted = re.findall(r"GLOBAL ([\w.]+)", str(error))[:1] or ["an unsupported object"]
    return ConfigError(
        f"checkpoint {path} is refused: it asks to load {', '.join(wanted)}, which is code, "
        "not data (aspp-seg reads checkpoints as data only, with torch.load(weights_only="
        "True): see 'Checkpoints are data' in docs/training.md)"
    )


def _unsafe_globals(path: str | Path) -> list[str]:
    """The globals outside torch's safe set that the file's pickle names (read from its
    opcodes, nothing run); empty when it cannot be scanned."""
    import torch

    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a file too damaged to scan: the caller uses torch's message
        return []


def _function(name: str):
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _not_a_checkpoint(path: Path, error: Exception, setting: str) -> ConfigError:
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return ConfigError(f"{setting} {path} is not a PyTorch checkpoint ({first[:160]})")


def run_config(path: str | Path, state: dict) -> Path | None:
    """The settings file of the run that wrote a checkpoint, where it still exists: the
    one the checkpoint names (``config.yaml``, or ``config.resumed-at-step-<N>.yaml``
    after a resume with changed settings), looked up in the checkpoint's run folder first
    (a copied or moved run keeps its old path in there), then where it was written; else
    the run folder's ``config.yaml``.

    Args:
        path: the checkpoint file, in ``<run>/checkpoints/`` or in ``<run>/`` itself.
        state: its contents (`read_checkpoint`).
    """
    path = Path(path).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    named = (state.get(CHECKPOINT_KEY) or {}).get("config")
    candidates = [run / Path(named).name, Path(named)] if named else []
    candidates.append(run / "config.yaml")
    return next((c for c in candidates if c.is_file()), None)


def check_fits(path: str | Path, state: dict, model) -> None:
    """Raises a one-line ConfigError when the checkpoint's weights do not fit `model`.

    Args:
        path: the checkpoint file (for the message).
        state: its contents (`read_checkpoint`).
        model: the LightningModule built from the config.
    """
    saved = state["state_dict"]
    wanted = model.state_dict()
    problem = None
    for key, tensor in wanted.items():
        if key not in saved:
            problem = f"{key} (shape {list(tensor.shape)}) is missing from the checkpoint"
            break
        if tuple(saved[key].shape) != tuple(tensor.shape):
            problem = (
                f"{key} is {list(saved[key].shape)} in the checkpoint but "
                f"{list(tensor.shape)} in the configured model"
            )
            break
    if problem is None:
        extra = next((key for key in saved if key not in wanted), None)
        if extra is None:
            return
        problem = f"the checkpoint holds {extra}, which the configured model does not have"
    config = run_config(path, state)
    hint = f"; its run's config would fit: --config {config}" if config else ""
    raise ConfigError(f"checkpoint {path} does not fit the config: {problem}{hint}")
