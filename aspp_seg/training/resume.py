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

A resume continues the run it resumes, with that run's settings: `check_resume`
compares the new settings with the ones the run recorded (its ``config.yaml``, or the
checkpoint's hyperparameters) and refuses, in one line listing them, any difference
that changes what is trained (`may_change_on_resume` lists what may change: where and
how long the run goes on, what it logs). ``--resume_with_changed_settings true``
continues anyway. The run's ``config.yaml`` is never rewritten by a resume: settings
that differ go to ``config.resumed-at-step-<N>.yaml`` beside it.

`follow_root_dir` puts the relative folders of a config (a logger's ``save_dir: runs``)
under ``trainer.default_root_dir`` when that is given, so that setting is never dropped.

`evaluation_folder` sends the outputs of ``validate`` / ``test`` / ``predict`` beside the
checkpoint they come from (``<run>/validate/<checkpoint name>/``), and `FolderSnapshot`
puts a folder back as it was when a command that wrote into it fails.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.checkpoints import (
    CHECKPOINT_KEY,
    is_file_path,
    read_checkpoint,
    run_config,
)

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


def follow_root_dir(trainer_cfg) -> None:
    """Puts a config's relative run folders under ``trainer.default_root_dir``, if set.

    Lightning writes under ``default_root_dir`` only what no logger or checkpoint
    callback places itself; every config here names a logger folder (``save_dir:
    runs``), which would make ``--trainer.default_root_dir`` a setting that does
    nothing. So a relative ``save_dir`` (or W&B's ``dir``) of every logger and a
    relative ``dirpath`` of a ModelCheckpoint are taken under it, made absolute so that
    the saved ``config.yaml`` read again names the same folders. Absolute paths and URLs
    stay as they are.

    Args:
        trainer_cfg: the ``trainer`` of a parsed subcommand, changed in place.
    """
    root = trainer_cfg.get("default_root_dir")
    if not root:
        return
    places = [(logger, ("save_dir", "dir")) for logger in _loggers(trainer_cfg)]
    places += [
        (callback, ("dirpath",))
        for callback in trainer_cfg.get("callbacks") or []
        if hasattr(callback, "get") and _kind(callback) == "ModelCheckpoint"
    ]
    for item, keys in places:
        args = item.get("init_args")
        for key in keys if args is not None else ():
            value = args.get(key)
            if isinstance(value, str | Path) and _relative(str(value)):
                args[key] = os.path.abspath(Path(root, value))


def _relative(path: str) -> bool:
    return "://" not in path and not Path(os.path.expanduser(path)).is_absolute()


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


# A resume's settings against the run's recorded ones.

RESUME_FLAG = "resume_with_changed_settings"

MAY_CHANGE_ON_RESUME = (
    # bookkeeping of the command itself
    "ckpt_path",
    "weights_only",
    RESUME_FLAG,
    # where the run goes on: hardware, processes, speed switches that compute the same step
    "trainer.accelerator",
    "trainer.strategy*",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.plugins*",
    "trainer.benchmark",
    "trainer.deterministic",
    "trainer.detect_anomaly",
    "trainer.inference_mode",
    "fast_paths.channels_last",
    "fast_paths.compile",
    "fast_paths.fused_optimizer",
    "fast_paths.grad_checkpointing",
    "data.init_args.root",
    "data.init_args.num_workers",
    "data.init_args.cache_dir",
    # how long: extending a run is a feature (ScheduleRetarget follows the new length)
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.min_epochs",
    "trainer.min_steps",
    # what it logs, validates and saves
    "trainer.default_root_dir",
    "trainer.logger*",
    "trainer.log_every_n_steps",
    "trainer.enable_*",
    "trainer.profiler*",
    "trainer.model_registry",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.limit_predict_batches",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.num_sanity_val_steps",
    "data.init_args.val_batch_size",
    "data.init_args.val_split",
    "data.init_args.test_split",
    "data.init_args.predict_source",
    "model.inference*",
    # where a new run's weights start: a resume's come from its checkpoint
    "model.init_weights",
)
"""Settings (dotted keys, fnmatch patterns) that a resume may change without
``--resume_with_changed_settings``; every other one changes what is trained."""

LOGGING_CALLBACKS = frozenset(
    {
        "ModelCheckpoint",
        "LearningRateMonitor",
        "SegmentationLogger",
        "ResultFiles",
        "DeviceStatsMonitor",
        "ModelSummary",
        "RichModelSummary",
        "TQDMProgressBar",
        "RichProgressBar",
        "PredictionWriter",
    }
)
"""Callbacks that only log or save: a resume may add, drop or change them."""

_BOOKKEEPING = (
    "ckpt_path",
    "weights_only",
    RESUME_FLAG,
    "trainer.logger*.version",
    "trainer.logger*.id",
    "trainer.logger*.save_dir",
    "trainer.logger*.dir",
    "trainer.default_root_dir",
)
"""Keys that a resume sets itself (`resolve_last` points the loggers at the run's
version) or that say where the run folder is (a copied or moved run): a difference in
them alone writes no new settings file."""


@dataclass(frozen=True)
class ResumeRecord:
    """What a resume found, for `RunConfigCallback`.

    Attributes:
        recorded: the settings file the resumed run recorded (None: only the
            checkpoint's hyperparameters).
        new_record: the file name for this resume's settings beside ``config.yaml``
            (``config.resumed-at-step-<N>.yaml``), or None when they are the same.
    """

    recorded: Path | None
    new_record: str | None


def may_change_on_resume(key: str) -> bool:
    """Whether a resume may change the setting `key` (dotted) without the opt-in."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in MAY_CHANGE_ON_RESUME)


def check_resume(parser, cfg) -> ResumeRecord | None:
    """Refuses a resume whose settings change what the run trains.

    The new settings are compared with the run's recorded ones: the settings file that
    its checkpoint names (``config.yaml`` or a later ``config.resumed-at-step-<N>.yaml``)
    or ``<run>/config.yaml``, both read with the same parser, so defaults and moved keys
    compare alike; with neither, the model settings in the checkpoint's hyperparameters.

    Args:
        parser: the ``fit`` parser (reads the recorded file).
        cfg: the parsed ``fit`` config, its ``ckpt_path`` a file (`resolve_last` run).

    Returns:
        What `RunConfigCallback` records, or None when this fit resumes nothing.

    Raises:
        ConfigError: a setting outside `MAY_CHANGE_ON_RESUME` differs and
            ``--resume_with_changed_settings`` is not set: one line listing the first
            keys, their values and how many differ.
    """
    ckpt_path = cfg.get("ckpt_path")
    if not is_file_path(ckpt_path) or not Path(ckpt_path).is_file():
        return None
    state = read_checkpoint(ckpt_path)
    recorded_path = run_config(ckpt_path, state)
    asked = _settings(parser, cfg)
    recorded = _recorded_settings(parser, cfg, recorded_path, state)
    differing = {
        key: (recorded.get(key), asked.get(key))
        for key in sorted(set(recorded) | set(asked))
        if not _same(key, recorded.get(key), asked.get(key))
    }
    trained = {k: v for k, v in differing.items() if not may_change_on_resume(k)}
    step = int(state.get("global_step", 0))
    new_record = f"config.resumed-at-step-{step}.yaml"
    where = recorded_path or f"the hyperparameters of {ckpt_path}"
    kept = (
        f"kept in {new_record} beside its config.yaml"
        if recorded_path
        else "kept in the new run's config.yaml"
    )
    if trained and not cfg.get(RESUME_FLAG):
        shown = "; ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, (old, new) in
                          list(trained.items())[:3])  # fmt: skip
        more = f" (and {len(trained) - 3} more)" if len(trained) > 3 else ""
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: {len(trained)} setting(s) that change what is trained "
            f"differ from the run's ({where}): {shown}{more}; resume with the run's "
            f"settings, or add --{RESUME_FLAG} true to go on with these ({kept})"
        )
    if trained:
        rank_zero_info(
            f"aspp-seg: resuming at step {step} with {len(trained)} changed setting(s) "
            f"({', '.join(trained)}), {kept}"
        )
    noted = [k for k in differing if not any(fnmatch.fnmatchcase(k, p) for p in _BOOKKEEPING)]
    return ResumeRecord(recorded_path, new_record if noted else None)


def _settings(parser, cfg) -> dict:
    """`cfg` as flat ``{dotted key: plain value}`` (as the saved config would hold it)."""
    import yaml

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dumped = yaml.safe_load(parser.dump(cfg, skip_unset=False, skip_validation=True)) or {}
    return _flatten(_without_logging_callbacks(dumped))


def _recorded_settings(parser, cfg, recorded_path: Path | None, state: dict) -> dict:
    """The run's settings: its recorded file parsed by `parser` (the file as it is,
    when it no longer parses), else `cfg` with the checkpoint's model hyperparameters."""
    import yaml

    if recorded_path is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _settings(parser, parser.parse_path(recorded_path))
        except Exception:  # a class that moved, an old key: compare the file as written
            raw = yaml.safe_load(recorded_path.read_text()) or {}
            return _flatten(_without_logging_callbacks(raw))
    hparams = dict(state.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    hparams.pop("_class_path", None)
    known = {k: v for k, v in hparams.items() if k in (cfg.get("model") or {})}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _settings(parser, parser.parse_object({"model": known}, cfg))
    except Exception:  # hyperparameters of another version: nothing to compare
        return _settings(parser, cfg)


def _without_logging_callbacks(config: dict) -> dict:
    trainer = config.get("trainer")
    if isinstance(trainer, dict) and isinstance(trainer.get("callbacks"), list):
        trainer["callbacks"] = [
            c
            for c in trainer["callbacks"]
            if not (isinstance(c, dict) and _kind(c) in LOGGING_CALLBACKS)
        ] or None
    return config


def _flatten(value, prefix: str = "") -> dict:
    """Nested dicts as ``{dotted key: value}``; lists of settings whole, except lists of
    dicts (loggers, callbacks, losses), whose items are numbered."""
    if isinstance(value, dict):
        if not value:
            return {prefix: None} if prefix else {}
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        flat = {}
        for i, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}.{i}"))
        return flat
    return {prefix: value}


def _same(key: str, recorded, asked) -> bool:
    if recorded == asked or (recorded in (None, [], {}) and asked in (None, [], {})):
        return True
    # a loss's `weight: <method>`: the run recorded the weights it computed (ClassWeights)
    return key.endswith("weight") and isinstance(asked, str) and isinstance(recorded, list)


def _short(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
