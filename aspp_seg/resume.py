"""``aspp-seg fit ... --ckpt_path last``: resume the previous run where it stopped.

Lightning resolves ``last`` from the checkpoint callback's folder, which for the CSV,
TensorBoard and W&B loggers is ``<save_dir>/<name>/<version>/checkpoints``. A new run
gets a new version, so Lightning alone would look in the new, empty folder and start
from scratch. Before the trainer is built, `resolve_last` therefore finds the newest
``last*.ckpt`` of the experiment (any version), passes its path on, and points the
loggers at the same version and the same W&B run id, so that metrics continue in one
folder and one W&B run. The checkpoint itself restores weights, optimizer, LR
scheduler position, epoch and global step.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.checkpoints import CHECKPOINT_KEY

_FOLDER_LOGGERS = ("CSVLogger", "TensorBoardLogger")


def _loggers(trainer_cfg) -> list:
    logger = trainer_cfg.get("logger")
    if logger is None or isinstance(logger, bool):
        return []
    return list(logger) if isinstance(logger, list | tuple) else [logger]


def _kind(logger_cfg) -> str:
    return str(logger_cfg.get("class_path", "")).rsplit(".", 1)[-1]


def _experiment_dir(trainer_cfg, first) -> Path:
    """``<save_dir>/<name>``: the folder whose version subfolders hold the checkpoints."""
    root = trainer_cfg.get("default_root_dir") or "."
    if first is None:  # Lightning's default logger
        return Path(root) / "lightning_logs"
    args = first.get("init_args") or {}
    if _kind(first) == "WandbLogger":
        save_dir = args.get("save_dir") or args.get("dir") or root
        return Path(save_dir) / (args.get("project") or "lightning_logs")
    return Path(args.get("save_dir") or root) / (args.get("name") or "lightning_logs")


def find_last_checkpoint(experiment_dir: str | Path) -> Path | None:
    """The newest ``<experiment_dir>/*/checkpoints/last*.ckpt``, or None."""
    found = list(Path(experiment_dir).glob("*/checkpoints/last*.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _read_state(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)


def _set_init_arg(logger_cfg, key: str, value) -> None:
    if logger_cfg.get("init_args") is None:
        logger_cfg["init_args"] = {}
    logger_cfg["init_args"][key] = value


def resolve_last(cfg, *, continue_run: bool = True) -> Path | None:
    """Turns ``ckpt_path: last`` into the experiment's newest last checkpoint.

    Args:
        cfg: the parsed config of one subcommand (a jsonargparse Namespace with
            ``ckpt_path`` and ``trainer``), changed in place.
        continue_run: also point the loggers at the checkpoint's version folder and
            W&B run (``fit``); False only resolves the path (``validate``, ``test``).

    Returns:
        The checkpoint resumed from, or None (nothing to do: another ckpt_path, a
        checkpoint callback with its own ``dirpath`` that Lightning searches itself,
        or no checkpoint yet, in which case training starts from scratch).
    """
    if cfg.get("ckpt_path") != "last":
        return None
    trainer_cfg = cfg["trainer"]
    for callback in trainer_cfg.get("callbacks") or []:
        args = callback.get("init_args") if hasattr(callback, "get") else None
        if args is not None and _kind(callback) == "ModelCheckpoint" and args.get("dirpath"):
            return None
    loggers = _loggers(trainer_cfg)
    first = loggers[0] if loggers else None
    checkpoint = find_last_checkpoint(_experiment_dir(trainer_cfg, first))
    if checkpoint is None:
        return None
    cfg["ckpt_path"] = str(checkpoint)
    if not continue_run:
        rank_zero_info(f"aspp-seg: --ckpt_path last is {checkpoint}")
        return checkpoint
    version = checkpoint.parent.parent.name
    state = _read_state(checkpoint)
    if first is not None and _kind(first) in _FOLDER_LOGGERS:
        number = re.fullmatch(r"version_(\d+)", version)
        _set_init_arg(first, "version", int(number.group(1)) if number else version)
        if _kind(first) == "CSVLogger":
            _set_aside_metrics(checkpoint.parent.parent, int(state.get("global_step", 0)))
    elif first is not None and _kind(first) == "WandbLogger":
        _set_init_arg(first, "id", version)
    wandb_id = (state.get(CHECKPOINT_KEY) or {}).get("wandb_id")
    for logger in loggers[1:]:
        if _kind(logger) == "WandbLogger" and wandb_id:
            _set_init_arg(logger, "id", wandb_id)
    rank_zero_info(
        f"aspp-seg: resuming from {checkpoint} (epoch {state.get('epoch')}, "
        f"step {state.get('global_step')})"
    )
    return checkpoint


_ASIDE = "metrics.before-resume.csv"


def _set_aside_metrics(log_dir: Path, global_step: int) -> None:
    """Keeps the rows of ``metrics.csv`` logged up to the checkpoint.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it opens a version
    folder again; the rows are moved aside here and put back by `restore_metrics`.
    Rows logged after the checkpoint (the killed run's lost steps) are dropped, since
    the resumed run logs those steps again.
    """
    metrics = log_dir / "metrics.csv"
    if not metrics.is_file():
        return
    with metrics.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if _before(row, global_step)]
    with (log_dir / _ASIDE).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    metrics.unlink()


def _before(row: dict, global_step: int) -> bool:
    """Whether a metrics row was logged before the checkpoint at `global_step`."""
    try:
        step = int(float(row.get("step") or 0))
    except ValueError:
        return True
    # Rows of the training loop (our train/* metrics, LearningRateMonitor's lr-*) are
    # logged at the step about to run: the one at `global_step` is replayed on resume.
    is_train = any(k.startswith(("train/", "lr-")) and v for k, v in row.items() if k)
    return step < global_step if is_train else step <= global_step


def restore_metrics(trainer) -> None:
    """Puts the rows set aside by `resolve_last` back into the CSV logger's file."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            continue
        aside = Path(logger.log_dir) / _ASIDE
        if not aside.is_file():
            continue
        writer = logger.experiment  # opening the folder deletes metrics.csv: now it is safe
        with aside.open(newline="") as f:
            header = list(csv.DictReader(f).fieldnames or [])
        Path(writer.metrics_file_path).write_bytes(aside.read_bytes())
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))
        if writer.metrics_keys != header:
            writer._rewrite_with_new_header(writer.metrics_keys)
        aside.unlink()


class LoggedStepAlignment(Callback):
    """Logs of a resumed run continue at the step the checkpoint reached.

    Lightning counts the step that loggers see (``_batches_that_stepped``) apart from
    the optimizer's ``global_step`` and adjusts it on restart by a guess about where the
    checkpoint was written; a run that stopped at ``max_steps`` on an epoch boundary and
    is extended then logs every later step one index too high (no row for the first
    resumed step). With one optimizer the two counters are the same number, so at the
    first training batch the logged one is set from the other. The CLI puts this
    callback first, so it runs before LearningRateMonitor logs that batch.
    """

    def __init__(self) -> None:
        self._checked = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._checked:
            return
        self._checked = True
        loop = trainer.fit_loop.epoch_loop
        if pl_module.automatic_optimization and loop._batches_that_stepped != trainer.global_step:
            loop._batches_that_stepped = trainer.global_step
