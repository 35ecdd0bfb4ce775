"""Checkpoints given with ``--ckpt_path``: checked before Lightning reads them.

A path that does not exist, a file that is not a checkpoint, or a checkpoint whose
tensors do not fit the configured network would otherwise end in a long traceback
from ``torch.load`` or ``load_state_dict``; here each is one `ConfigError` that names
the file and, for a network of another shape, the first tensor that differs and the
run's own ``config.yaml`` that would fit.
"""

from __future__ import annotations

from pathlib import Path

from aspp_seg.errors import ConfigError

CHECKPOINT_KEY = "aspp_seg"
"""Key of aspp-seg's own entries in a Lightning checkpoint (W&B run id, schedule
length, the run's config file)."""

SPECIAL_PATHS = ("last", "best", "hpc")
"""``--ckpt_path`` values that Lightning (or `aspp_seg.training.resume`) resolves itself."""


def is_file_path(ckpt_path: object) -> bool:
    """Whether `ckpt_path` names a file (not None, ``last``, ``best``, a registry ...)."""
    if not isinstance(ckpt_path, str | Path):
        return False
    text = str(ckpt_path)
    return text not in SPECIAL_PATHS and not text.startswith("registry")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path`, memory-mapped (tensors are read only when used).

    Raises:
        ConfigError: naming `path` when it is missing, a folder, or not a Lightning
            checkpoint.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--ckpt_path {path}: no such file")
    if path.is_dir():
        raise ConfigError(f"--ckpt_path {path} is a folder; give a .ckpt file in it")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            raise ConfigError(
                f"--ckpt_path {path} is not a PyTorch checkpoint (not the zip format that "
                "torch.save and Lightning write)"
            ) from None
        except pickle.UnpicklingError as error:
            if "Weights only load failed" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except ConfigError:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"--ckpt_path {path} is not a PyTorch checkpoint ({first[:160]})"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"--ckpt_path {path} is not a Lightning checkpoint (no state_dict)")
    return state


def run_config(path: str | Path, state: dict) -> Path | None:
    """The ``config.yaml`` of the run that wrote a checkpoint, where it still exists:
    the one the checkpoint names, else ``<run>/config.yaml`` beside ``checkpoints/``."""
    named = (state.get(CHECKPOINT_KEY) or {}).get("config")
    candidates = [Path(named)] if named else []
    candidates.append(Path(path).resolve().parent.parent / "config.yaml")
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
