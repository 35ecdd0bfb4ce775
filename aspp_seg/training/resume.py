"""Run folders: ``--ckpt_path last | best``, resuming a run, and where evaluations write.

Lightning resolves ``last`` from the checkpoint callback's folder, which for the CSV,
TensorBoard and W&B loggers is ``<save_dir>/<name>/<version>/checkpoints``. A new run
gets a new version, so Lightning alone would look in the new, empty folder and start
from scratch. Before the trainer is built, `resolve_last` therefore finds the newest
``last*.ckpt`` of the experiment (any version), passes its path on, and points the
loggers at the same version and the same W&B run id, so that metrics continue in one
folder and one W&B run. The checkpoint itself restores weights, optimizer, LR
scheduler position, epoch and global step. ``best`` is the best checkpoint that the
newest run recorded. A ``last`` or ``best`` that finds nothing is an error, except for
``fit --ckpt_path last``, which then starts a new run (resume-or-start).

`evaluation_folder` sends the outputs of ``validate`` / ``test`` / ``predict`` beside the
checkpoint they come from (``<run>/validate/<checkpoint name>/``), and `FolderSnapshot`
puts a folder back as it was when a command that wrote into it fails.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.checkpoints import CHECKPOINT_KEY, read_checkpoint

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
    return _newest(Path(experiment_dir).glob("*/checkpoints/last*.ckpt"))


def _newest(paths) -> Path | None:
    found = list(paths)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _set_init_arg(logger_cfg, key: str, value) -> None:
    if logger_cfg.get("init_args") is None:
        logger_cfg["init_args"] = {}
    logger_cfg["init_args"][key] = value


def _own_dirpath(trainer_cfg) -> Path | None:
    """The ``dirpath`` of a configured ModelCheckpoint, where it sets one."""
    for callback in trainer_cfg.get("callbacks") or []:
        args = callback.get("init_args") if hasattr(callback, "get") else None
        if args is not None and _kind(callback) == "ModelCheckpoint" and args.get("dirpath"):
            return Path(args["dirpath"])
    return None


def best_of(last: Path) -> Path | None:
    """The best checkpoint that the run of `last` recorded (its ModelCheckpoint's
    ``best_model_path``), where that file still exists."""
    state = read_checkpoint(last)
    for key, value in (state.get("callbacks") or {}).items():
        best = value.get("best_model_path") if isinstance(value, dict) else None
        if not str(key).startswith("ModelCheckpoint") or not best:
            continue
        # beside `last` first: a run folder moved or copied keeps its old path in there
        for candidate in (last.parent / Path(best).name, Path(best)):
            if candidate.is_file():
                return candidate
    return None


def resolve_last(cfg, *, continue_run: bool = True) -> Path | None:
    """Turns ``ckpt_path: last`` (or ``best``) into a checkpoint file of the experiment.

    ``last`` is the newest ``last*.ckpt`` of the experiment's version folders (or of a
    ModelCheckpoint's own ``dirpath``); ``best`` is the best checkpoint that the newest
    run recorded.

    Args:
        cfg: the parsed config of one subcommand (a jsonargparse Namespace with
            ``ckpt_path`` and ``trainer``), changed in place.
        continue_run: ``fit``: also point the loggers at the checkpoint's version folder
            and W&B run, and start a new run (one line says so) when there is no
            checkpoint yet, the resume-or-start idiom of requeued cluster jobs. False
            (``validate``, ``test``, ``predict``): only resolve the path.

    Returns:
        The checkpoint resumed or evaluated, or None (another ``ckpt_path``, or ``fit``
        with nothing to resume).

    Raises:
        ConfigError: ``last`` or ``best`` finds no checkpoint (except ``fit --ckpt_path
            last``), or the checkpoint is not one.
    """
    which = cfg.get("ckpt_path")
    if which not in ("last", "best"):
        return None
    trainer_cfg = cfg["trainer"]
    loggers = _loggers(trainer_cfg)
    first = loggers[0] if loggers else None
    dirpath = _own_dirpath(trainer_cfg)
    if dirpath is None and trainer_cfg.get("logger") is False:  # Lightning: <root>/checkpoints
        dirpath = Path(trainer_cfg.get("default_root_dir") or ".") / "checkpoints"
    if dirpath is not None:
        where, checkpoint = dirpath / "last*.ckpt", _newest(dirpath.glob("last*.ckpt"))
    else:
        experiment = _experiment_dir(trainer_cfg, first)
        where = experiment / "*/checkpoints/last*.ckpt"
        checkpoint = find_last_checkpoint(experiment)
    if which == "best":
        if continue_run:
            raise ConfigError("fit --ckpt_path best: resume with --ckpt_path last or a .ckpt path")
        best = best_of(checkpoint) if checkpoint is not None else None
        if best is None:
            raise ConfigError(
                f"--ckpt_path best: no best checkpoint recorded by a run under {where} "
                "(it needs a ModelCheckpoint with a monitor); give a .ckpt path"
            )
        cfg["ckpt_path"] = str(best)
        rank_zero_info(f"aspp-seg: --ckpt_path best is {best}")
        return best
    if checkpoint is None:
        if not continue_run:
            raise ConfigError(
                f"--ckpt_path last: no checkpoint matches {where}: train first (aspp-seg "
                "fit with the same config) or give a .ckpt path"
            )
        rank_zero_info(f"aspp-seg: --ckpt_path last: no {where} yet, starting a new run")
        cfg["ckpt_path"] = None
        return None
    cfg["ckpt_path"] = str(checkpoint)
    if not continue_run:
        rank_zero_info(f"aspp-seg: --ckpt_path last is {checkpoint}")
        return checkpoint
    state = read_checkpoint(checkpoint)  # a damaged file is one line, not a traceback
    if dirpath is None:
        _continue_loggers(loggers, checkpoint, state)
    rank_zero_info(
        f"aspp-seg: resuming from {checkpoint} (epoch {state.get('epoch')}, "
        f"step {state.get('global_step')})"
    )
    return checkpoint


def _continue_loggers(loggers: list, checkpoint: Path, state: dict) -> None:
    """Points the loggers at the checkpoint's version folder and W&B run."""
    first = loggers[0] if loggers else None
    version = checkpoint.parent.parent.name
    if first is not None and _kind(first) in _FOLDER_LOGGERS:
        number = re.fullmatch(r"version_(\d+)", version)
        _set_init_arg(first, "version", int(number.group(1)) if number else version)
        if _kind(first) == "CSVLogger":
            _keep_metrics(checkpoint.parent.parent, int(state.get("global_step", 0)))
    elif first is not None and _kind(first) == "WandbLogger":
        _set_init_arg(first, "id", version)
    wandb_id = (state.get(CHECKPOINT_KEY) or {}).get("wandb_id")
    for logger in loggers[1:]:
        if _kind(logger) == "WandbLogger" and wandb_id:
            _set_init_arg(logger, "id", wandb_id)


_KEPT: dict[Path, tuple[list[str], list[dict]]] = {}
"""Rows of ``metrics.csv`` to put back, by the resolved log folder."""


def _keep_metrics(log_dir: Path, global_step: int) -> None:
    """Remembers the rows of ``metrics.csv`` logged up to the checkpoint.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it opens a version
    folder again; the rows are kept in memory here (the file is not touched, so a
    resume that fails before training leaves it as it was) and written back by
    `restore_metrics`. Rows logged after the checkpoint (the killed run's lost steps)
    are dropped, since the resumed run logs those steps again.
    """
    metrics = log_dir / "metrics.csv"
    if not metrics.is_file():
        return
    with metrics.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if _before(row, global_step)]
    _KEPT[log_dir.resolve()] = (header, rows)


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
    """Writes the rows kept by `resolve_last` back into the CSV logger's file."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            continue
        kept = _KEPT.pop(Path(logger.log_dir).resolve(), None)
        if kept is None:
            continue
        header, rows = kept
        writer = logger.experiment  # opening the folder deletes metrics.csv: now it is safe
        with open(writer.metrics_file_path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))
        if writer.metrics_keys != header:
            writer._rewrite_with_new_header(writer.metrics_keys)


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint: ``<run>`` for ``<run>/checkpoints/x.ckpt``, else
    the checkpoint's own folder."""
    checkpoint = Path(checkpoint).resolve()
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def evaluation_folder(cfg, stage: str) -> Path | None:
    """Points a ``validate`` / ``test`` / ``predict`` config at ``<run>/<stage>/<ckpt>``.

    The results of evaluating a checkpoint (per-class IoU tables, metrics, the command's
    config, predictions) go beside it, into ``<run>/validate/last/``,
    ``<run>/predict/best-epoch=05/``, ... and not into a new ``version_N`` folder. The
    folder-based loggers (CSV, TensorBoard) and ``default_root_dir`` are pointed there;
    a W&B logger keeps its own run. Without ``--predict_dir`` predictions are written
    there too.

    Args:
        cfg: the parsed config of the subcommand, changed in place.
        stage: ``validate``, ``test`` or ``predict``.

    Returns:
        The folder, or None when no checkpoint file is given (a fresh network keeps the
        config's logger).

    Raises:
        ConfigError: the run folder cannot be written.
    """
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    checkpoint = Path(ckpt_path)
    run = run_folder(checkpoint)
    folder = run / stage / checkpoint.stem
    existing = next(p for p in (folder, folder.parent, run) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK) or not existing.is_dir():
        raise ConfigError(
            f"cannot write the {stage} results beside checkpoint {checkpoint}: {existing} "
            "is not a writable folder (copy the checkpoint to a folder you can write)"
        )
    trainer_cfg = cfg["trainer"]
    trainer_cfg["default_root_dir"] = str(folder)
    if trainer_cfg.get("logger") in (None, True):  # Lightning's default: lightning_logs/version_N
        trainer_cfg["logger"] = False  # the result files go to default_root_dir
    for logger in _loggers(trainer_cfg):
        if _kind(logger) in _FOLDER_LOGGERS:
            _set_init_arg(logger, "save_dir", str(folder.parent))
            _set_init_arg(logger, "name", "")
            _set_init_arg(logger, "version", folder.name)
    if stage == "predict" and cfg.get("predict_dir") is None:
        cfg["predict_dir"] = str(folder)
    return folder


class FolderSnapshot:
    """A folder's small files as they were, to put back when a command that writes into
    it fails before it has a result (a resumed ``fit`` that wrote no checkpoint, an
    evaluation that stopped): files it changed get their bytes back, files and folders
    it created go (the whole folder, and the parents it made, if it was not there).
    Checkpoints are left alone, and files over `max_bytes` are not kept.
    """

    def __init__(self, folder: str | Path, *, max_bytes: int = 16 * 2**20) -> None:
        self.folder = Path(folder)
        self.existed = self.folder.is_dir()
        self.first_existing = next(p for p in self.folder.parents if p.exists())
        self.files: dict[Path, bytes | None] = {}
        self.folders = {p for p in self.folder.rglob("*") if p.is_dir()}
        for path in self.folder.rglob("*"):
            if path.is_file():
                small = path.suffix != ".ckpt" and path.stat().st_size <= max_bytes
                self.files[path] = path.read_bytes() if small else None

    def restore(self) -> None:
        if not self.existed:
            if self.folder.is_dir() and not any(self.folder.rglob("*.ckpt")):
                shutil.rmtree(self.folder)
                parent = self.folder.parent
                while parent != self.first_existing and not any(parent.iterdir()):
                    parent.rmdir()  # a parent this command created, left empty
                    parent = parent.parent
            return
        for path in sorted(self.folder.rglob("*"), reverse=True):  # files before folders
            if path.is_file() and path not in self.files and path.suffix != ".ckpt":
                path.unlink()
            elif path.is_dir() and path not in self.folders and not any(path.iterdir()):
                path.rmdir()
        for path, data in self.files.items():
            if data is not None and (not path.is_file() or path.read_bytes() != data):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)


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
