"""How every trainer of ``aspp-seg`` reads and writes checkpoint files (`SafeCheckpointIO`).

Lightning's own restore (``fit / validate / test / predict --ckpt_path``, also ``last``,
``best`` and ``hpc``) reads through `aspp_seg.evaluation.checkpoints.read_checkpoint`:
weights only, so a checkpoint is data and never runs code. Every write goes to a
temporary file in the checkpoint's folder, is flushed to the disk and then renamed over
the old file, so a full disk or a kill leaves the previous checkpoint or none, never a
part of one (Lightning's own writer stages the file in the system's temporary folder and
copies it over when that is another file system). A Ctrl-C during the write takes effect
once the checkpoint is written.

In plain Python: ``Trainer(plugins=[SafeCheckpointIO()])``; ``aspp-seg`` installs it in
every trainer it builds (`use_safe_checkpoint_io`).
"""

from __future__ import annotations

import errno
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO

from aspp_seg.data.io import interrupts_deferred, replacing
from aspp_seg.errors import ConfigError, FileSystemError, file_system_cause
from aspp_seg.evaluation.checkpoints import read_checkpoint, refused


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, weights only and atomic."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Writes `checkpoint` to `path` through a temporary file beside it.

        Raises:
            FileSystemError: naming `path` when the disk is full, read-only or not ours.
        """
        if not _is_local(path):  # s3://, gs://, ...: Lightning's transaction on the store
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        try:
            # the temporary name does not end in .ckpt: what a kill -9 leaves behind must
            # not match the `*.ckpt` that load_model and the resume look for; a Ctrl-C
            # waits until the checkpoint is written (`interrupts_deferred`)
            with (
                interrupts_deferred(),
                replacing(path, keep_suffix=False, sync=True) as staged,
                open(staged, "wb") as file,
            ):
                torch.save(checkpoint, file)
        except (OSError, RuntimeError) as error:  # torch.save: a RuntimeError from an OSError
            cause = file_system_cause(error)
            if cause is None:
                raise
            raise FileSystemError.of(cause, "write checkpoint", path) from None

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """The checkpoint at `path`, read as data only (`read_checkpoint`).

        Raises:
            ConfigError: for ``weights_only=False`` (``--weights_only false``), which would
                let the file run code, and for a file that `read_checkpoint` refuses.
        """
        if weights_only is False:
            raise ConfigError(
                "--weights_only false is not supported: aspp-seg reads checkpoints as data "
                "only (weights_only=True), so that a checkpoint cannot run code"
            )
        if not _is_local(path):
            try:
                return super().load_checkpoint(path, map_location, weights_only=True)
            except pickle.UnpicklingError as error:
                raise refused(path, error) from None
        return read_checkpoint(path, map_location=map_location)


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path)  # a URL (s3://, file://, ...) goes through fsspec


def use_safe_checkpoint_io(trainer: Trainer) -> None:
    """Gives `trainer` a `SafeCheckpointIO` in place of Lightning's default one (also as the
    base of a wrapping one such as ``AsyncCheckpointIO``). A CheckpointIO of the user's own
    class stays: its reading and writing are theirs."""
    strategy = trainer.strategy
    current = strategy._checkpoint_io  # None: Lightning makes its default on first use
    if isinstance(current, _WrappingCheckpointIO):
        current.checkpoint_io = SafeCheckpointIO()  # kept only when no base was given
    elif current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO()


def check_run_folders(trainer_cfg, *, fit: bool) -> None:
    """Refuses a run whose log or checkpoint folder cannot be written (a read-only file
    system, no permission) before the net and data are built, in one line naming the
    folder and the setting; what fails later (a full disk) is one line too
    (`aspp_seg.cli.main`).

    Args:
        trainer_cfg: the ``trainer`` of a parsed subcommand.
        fit: whether the run trains (and so writes checkpoints under ``default_root_dir``
            when no logger or ``dirpath`` places them).
    """
    loggers = trainer_cfg.get("logger")
    loggers = loggers if isinstance(loggers, list | tuple) else [loggers]
    places = [
        (args.get(key), f"trainer.logger {key}")
        for logger in loggers
        if hasattr(logger, "get") and hasattr(args := logger.get("init_args"), "get")
        for key in ("save_dir", "dir")
    ]
    if fit:
        places += [
            (args.get("dirpath"), "ModelCheckpoint dirpath")
            for callback in trainer_cfg.get("callbacks") or []
            if hasattr(callback, "get") and hasattr(args := callback.get("init_args"), "get")
        ]
        if not any(folder for folder, _ in places):
            places.append((trainer_cfg.get("default_root_dir") or ".", "trainer.default_root_dir"))
    for folder, setting in places:
        if isinstance(folder, str | Path) and _is_local(folder):
            _check_writable(Path(folder).absolute(), setting)


def _check_writable(folder: Path, setting: str) -> None:
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir() or os.access(existing, os.W_OK | os.X_OK):
        return
    read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
    reason = os.strerror(errno.EROFS if read_only else errno.EACCES)
    where = folder if existing == folder else f"{folder} (in {existing})"
    raise FileSystemError(f"cannot write {setting} {where}: {reason}")
