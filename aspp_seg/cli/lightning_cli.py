"""aspp-seg's LightningCLI: fit / validate / test / predict, and the parser of every
config (`ConfigReader`, which `aspp_seg.cli.config.read_config` parses with).

Besides the model, data and trainer, every run gets callbacks that do not belong to the
task: `FastPaths` and `LRScaling` (set under the config's top-level ``fast_paths:`` and
``lr_scaling:``), `RunGuard`, `Preemption` (SIGTERM, SIGUSR1), `ClassWeights`,
`ScheduleRetarget` and `RunEstimate` (``fit``), `ResultFiles`, `SegmentationLogger` (with W&B or
TensorBoard) and a `PredictionWriter` (``predict``, writing to its ``--predict_dir``).

Kept apart from `aspp_seg.cli` so that the ``aspp-seg`` entry point imports Lightning
only for the subcommands that need it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from aspp_seg.cli.fit_settings import check_fit_settings
from aspp_seg.data.datamodules import fitting_with
from aspp_seg.errors import ConfigError, Interrupted, UsageError
from aspp_seg.evaluation.checkpoints import check_fits, is_file_path, read_checkpoint
from aspp_seg.training.callbacks import (
    ClassWeights,
    FastPaths,
    LoggedStepAlignment,
    LRScaling,
    PredictionWriter,
    Preemption,
    ResultFiles,
    RunConfigCallback,
    RunEstimate,
    RunGuard,
    ScheduleRetarget,
    SegmentationLogger,
)
from aspp_seg.training.checkpoint_io import check_run_folders, use_safe_checkpoint_io
from aspp_seg.training.determinism import check_deterministic
from aspp_seg.training.module import SegmentationModule
from aspp_seg.training.precision import choose_precision
from aspp_seg.training.resume import (
    RESUME_FLAG,
    FolderSnapshot,
    check_resume,
    evaluation_folder,
    follow_root_dir,
    resolve_last,
    restore_metrics,
)

_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def training_processes(trainer_cfg) -> int | None:
    """Processes that a parsed ``trainer`` config trains on (devices x nodes), counted as
    Lightning counts them; None when it cannot tell before the trainer exists (an
    accelerator object, TPUs, a devices value that Lightning will refuse itself)."""
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

    accelerator, devices = trainer_cfg.get("accelerator", "auto"), trainer_cfg.get("devices")
    if accelerator in ("auto", "gpu"):
        gpu = CUDAAccelerator if CUDAAccelerator.is_available() else MPSAccelerator
        accelerator = "gpu" if gpu.is_available() else "cpu"
    kind = {"cpu": CPUAccelerator, "cuda": CUDAAccelerator, "mps": MPSAccelerator}.get(
        accelerator, gpu if accelerator == "gpu" else None
    )
    if kind is None:
        return None
    try:
        if devices in (None, "auto"):
            devices = kind.auto_device_count()
        count = len(kind.get_parallel_devices(kind.parse_devices(devices)))
    except Exception:  # Lightning names a bad value when it builds the trainer
        return None
    return count * int(trainer_cfg.get("num_nodes") or 1)


_NO_CLASS = re.compile(
    r"Problem with given class_path '(?P<path>[^']+)': "
    r"(?P<why>module '[^']+' has no attribute '[^']+'|No module named '[^']+')"
)
_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)": ')


def parse_error(message: str) -> str:
    """jsonargparse's explanation (over several lines, one per subclass it tried) as one
    line of at most 400 characters. A class path that imports nothing (a class that
    moved or was renamed) is named alone, without the subclasses that were tried."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    missing = _NO_CLASS.search(text)
    if missing is not None:
        key = _KEY.match(text)
        text = (
            f"{key['key'] + ': ' if key else ''}there is no class {missing['path']} "
            f"({missing['why']}): give the class's current module path"
        )
    return text if len(text) <= 400 else text[:397] + "..."


class AsppSegParser(LightningArgumentParser):
    """LightningCLI's parser, whose mistakes are one line naming the setting or file."""

    _reading: str | None = None  # the config file being read, for errors

    def parse_path(self, path, *more, **kwargs):
        reading, self._reading = self._reading, str(path)
        try:
            return super().parse_path(path, *more, **kwargs)
        finally:
            self._reading = reading

    def error(self, message: str, ex: Exception | None = None):
        """A mistake on the command line or in a config file as one line (`UsageError`:
        ``aspp-seg: error: ...``, exit status 2), not jsonargparse's usage screen. A
        parser built not to exit (`aspp_seg.cli.config.read_config`'s) raises its
        ArgumentError as before."""
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        command = " ".join(["aspp-seg", *parser.prog.replace(" [options]", "").split()[1:]])
        lists = "subcommands" if getattr(parser, "_subcommands_action", None) else "settings"
        text = parse_error(message)
        if self._reading and self._reading not in text:  # a config file did not parse
            text = f"config {self._reading}: {text}"
        raise UsageError(f"{text} ({command} --help lists the {lists})")


class AsppSegCLI(LightningCLI):
    """LightningCLI whose data module tells the model its classes, and which adds the
    callbacks of every run."""

    def add_arguments_to_parser(self, parser) -> None:
        # how a step runs on the hardware at hand and how the LR follows the batch:
        # callbacks in every run, set under the config's top-level `fast_paths:` and
        # `lr_scaling:` (see aspp_seg.training.callbacks)
        parser.add_lightning_class_args(FastPaths, "fast_paths")
        parser.add_lightning_class_args(LRScaling, "lr_scaling")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument(
                "--predict_dir",
                type=str | None,
                default=None,
                help="where the PNGs go (trainIds/, labelIds/, color/, overlay/); default: "
                "<run>/predict/<checkpoint>/ beside --ckpt_path, else <log dir>/predictions",
            )
        if subcommand == "fit":
            parser.add_argument(
                f"--{RESUME_FLAG}",
                type=bool,
                default=False,
                help="let --ckpt_path resume with settings that change what is trained "
                "(see docs/training.md); the run's config.yaml stays, the new settings go "
                "to config.resumed-at-step-<N>.yaml",
            )
        return parser

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's: the checkpoint's hyperparameters over the config. The file is
        checked first (a wrong --ckpt_path is one line, not a torch.load traceback) and
        read once."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not is_file_path(ckpt_path):
            return
        state = read_checkpoint(ckpt_path)  # memory-mapped
        self._checkpoint = (ckpt_path, state)
        if subcommand == "fit":  # a resume's settings are compared with the run's instead
            return  # (`check_resume`): the command line is never overridden silently
        hparams = dict(state.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except UsageError as error:
            raise UsageError(f"--ckpt_path {ckpt_path}: its model settings do not parse "
                              f"here: {error}") from None  # fmt: skip

    def before_instantiate_classes(self) -> None:
        self._guard = RunGuard()
        self._preemption = Preemption()
        self._snapshot: FolderSnapshot | None = None
        self._resume = None
        if self.subcommand not in _SUBCOMMANDS:
            return
        config = self.config[self.subcommand]
        fit = self.subcommand == "fit"
        follow_root_dir(config["trainer"])  # relative logger folders under default_root_dir
        check_run_folders(config["trainer"], fit=fit)  # a read-only log folder: one line
        if fit:  # a fit that would train nothing, optimizer values torch refuses
            check_fit_settings(config)
        # `--ckpt_path last | best`: the experiment's checkpoint, not the new folder's
        resumed = resolve_last(config, continue_run=fit)
        # unset precision: the checkpoint's run's, else bf16-mixed on a CPU with native bf16
        choose_precision(config)
        # a resume goes on with the run's settings, or says which ones differ
        self._resume = check_resume(self._parser("fit"), config) if fit else None
        if config.get("ckpt_path") is not None and config["model"].get("init_weights"):
            # the checkpoint's weights replace them: a run's init file need not be kept
            config["model"]["init_weights"] = None
        if resumed is not None and fit:
            # a resume that fails before it writes a checkpoint puts the folder back
            self._snapshot = FolderSnapshot(resumed.parent.parent)
        if not fit:
            # <run>/<subcommand>/<ckpt>/, also predict's --predict_dir when not given
            folder = evaluation_folder(config, self.subcommand)
            if folder is not None:  # an evaluation that fails leaves it as it was
                self._snapshot = FolderSnapshot(folder)
        # W&B / TensorBoard runs get the IoU table, confusion matrix and overlays
        add_segmentation_logger(config["trainer"])
        # the per-class IoU tables and confusion matrix of every evaluation, as files
        add_result_files(config["trainer"])

    def after_instantiate_classes(self) -> None:
        use_safe_checkpoint_io(self.trainer)  # checkpoints read as data, written atomically
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunConfigCallback):
                callback.resume = self._resume  # a resumed fit keeps the run's config.yaml
                # the evaluation folder is this command's
                callback.replace = self.subcommand != "fit" and self._snapshot is not None

    def instantiate_classes(self) -> None:
        if self.subcommand != "fit":
            super().instantiate_classes()
            return
        trainer = self.config["fit"]["trainer"]
        processes = training_processes(trainer)
        if processes is None:
            super().instantiate_classes()
            return
        # the data module (built before the net) refuses a fit that gets no batch
        with fitting_with(processes, int(trainer.get("accumulate_grad_batches") or 1)):
            super().instantiate_classes()

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException as error:
            self._preemption.restore()  # Lightning calls no teardown hook on an exception
            # Lightning turns Ctrl-C into sys.exit(1) after its clean-up: one line instead
            if self._snapshot is not None and not self._guard.wrote_checkpoint:
                self._snapshot.restore()
            if self._guard.interrupted_at is not None:
                raise Interrupted(self._guard.interruption_message(self.trainer)) from None
            # and SIGTERM (SIGUSR1) into a SystemExit with status 0: one line, 143 (138)
            if isinstance(error, SIGTERMException):
                raise self._preemption.error(self.trainer) from None
            raise

    def _check_checkpoint(self) -> None:
        """The checkpoint's tensors fit the configured net, or one line says which does not."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not is_file_path(ckpt_path):
            return
        path, state = getattr(self, "_checkpoint", (None, None))
        if path != ckpt_path:  # `last`, resolved after parsing: read it here
            state = read_checkpoint(ckpt_path)
        check_fits(ckpt_path, state, self.model)

    def before_fit(self) -> None:
        self._check_checkpoint()
        check_deterministic(self.trainer)
        restore_metrics(self.trainer)  # the metrics of the run that `--ckpt_path last` resumes
        callbacks = self.trainer.callbacks
        scaling = [c for c in callbacks if isinstance(c, LRScaling) and c.rule != "none"]
        if len(scaling) > 1:
            raise ConfigError(
                "the LR is scaled twice: set lr_scaling.rule (the top-level lr_scaling: "
                "section) or list an LRScaling in trainer.callbacks, not both"
            )
        loss_config = self.config["fit"]["model"].get("loss")
        # first: the guard sees every step; class weights are set before the config is saved
        callbacks[0:0] = [
            self._guard,
            self._preemption,  # SIGTERM, SIGUSR1: last.ckpt at the next step
            ClassWeights(loss_config),
            LoggedStepAlignment(),  # before any logging callback
        ]
        if not any(isinstance(c, ScheduleRetarget) for c in callbacks):
            callbacks.append(ScheduleRetarget())  # a resumed run's schedule follows its length
        if not any(isinstance(c, RunEstimate) for c in callbacks):
            callbacks.append(RunEstimate())  # one line: how long the rest of the fit takes

    def _before_evaluation(self) -> None:
        self._check_checkpoint()
        # Ctrl-C, SIGTERM, SIGUSR1: one line
        self.trainer.callbacks[0:0] = [self._guard, self._preemption]

    before_validate = before_test = _before_evaluation

    def before_predict(self) -> None:
        self._before_evaluation()
        if any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            return  # a writer listed in trainer.callbacks has its own settings
        folder = self.config["predict"].get("predict_dir")
        if folder is None:  # no checkpoint file (no evaluation folder): the log folder
            folder = Path(self.trainer.log_dir or ".") / "predictions"
        writer = PredictionWriter(str(folder))
        writer.setting = "predict_dir"
        self.trainer.callbacks.append(writer)


class ConfigReader(AsppSegCLI):
    """`AsppSegCLI` that parses its command line and stops there: its ``config`` is what
    the subcommand would run with. Nothing is seeded, read from a checkpoint, checked or
    built (`aspp_seg.cli.config.read_config` reads every config with it).

    Args:
        add_arguments: adds a command's own options to each subcommand's parser, so that
            one command line holds both.
        args, kwargs: as `LightningCLI` takes them (`lightning_cli` passes them).
    """

    _parsers: ClassVar[dict[tuple, LightningArgumentParser]] = {}
    """(``add_arguments``, parser kwargs) -> the parser built with them: building one
    costs as much as a parse, and a process may read many configs (a sweep, the tests)."""

    def __init__(
        self,
        *args,
        add_arguments: Callable[[LightningArgumentParser], None] | None = None,
        **kwargs,
    ) -> None:
        self._add_command_arguments = add_arguments
        super().__init__(*args, load_from_checkpoint_support=False, **kwargs)

    def setup_parser(self, *args, **kwargs) -> None:
        key = (self._add_command_arguments, repr(self.parser_kwargs))
        if key not in self._parsers:
            super().setup_parser(*args, **kwargs)
            self._parsers[key] = self.parser
        self.parser = self._parsers[key]

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        if self._add_command_arguments is not None:
            self._add_command_arguments(parser)

    def parse_arguments(self, parser, args) -> None:
        # LightningCLI's, less its warning when the process has a command line of its own
        self.config = parser.parse_args(args)

    # what LightningCLI's constructor does after the parse: nothing, here
    def _parse_ckpt_path(self) -> None:
        pass

    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def lightning_cli(
    args: list[str] | None, *, cli_class: type[AsppSegCLI] = AsppSegCLI, **kwargs
) -> AsppSegCLI:
    """Runs LightningCLI on `args` (None: the process's command line) with aspp-seg's
    model and any LightningDataModule.

    Args:
        args: the command line after ``aspp-seg``.
        cli_class: `AsppSegCLI` or a subclass (`ConfigReader`).
        kwargs: more LightningCLI arguments (``run=False``, ``parser_kwargs``, ...).
    """
    return cli_class(
        SegmentationModule,
        LightningDataModule,
        **{
            "subclass_mode_data": True,
            "parser_class": AsppSegParser,
            "auto_configure_optimizers": False,
            "save_config_callback": RunConfigCallback,
            "save_config_kwargs": {"overwrite": True},
            **kwargs,
        },
        args=args,
    )


# Config editing: callbacks that every run gets unless its config lists them.

_IMAGE_LOGGERS = ("WandbLogger", "TensorBoardLogger")


def add_result_files(trainer_cfg) -> bool:
    """Adds `ResultFiles` to a parsed trainer config that has none; returns whether it did.

    Args:
        trainer_cfg: the ``trainer`` Namespace of a parsed subcommand, changed in place.
    """
    return _add_callback(trainer_cfg, ResultFiles)


def add_segmentation_logger(trainer_cfg) -> bool:
    """Adds `SegmentationLogger` (defaults) to a parsed trainer config that logs to W&B or
    TensorBoard and has none, so that ``--config configs/logger/wandb.yaml`` gives every
    experiment its tables and overlays. Returns whether it added one.

    Args:
        trainer_cfg: the ``trainer`` Namespace of a parsed subcommand, changed in place.
    """
    loggers = trainer_cfg.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    kinds = {str(lg.get("class_path", "")).rsplit(".", 1)[-1] for lg in loggers if _has_get(lg)}
    if not kinds & set(_IMAGE_LOGGERS):
        return False
    return _add_callback(trainer_cfg, SegmentationLogger)


def _add_callback(trainer_cfg, callback: type) -> bool:
    """Appends `callback` (default arguments) to the config's callbacks unless listed."""
    from jsonargparse import Namespace

    callbacks = list(trainer_cfg.get("callbacks") or [])
    path = f"aspp_seg.training.callbacks.{callback.__name__}"
    if any(_has_get(c) and _names(c.get("class_path"), callback) for c in callbacks):
        return False
    callbacks.append(Namespace(class_path=path, init_args=Namespace()))
    trainer_cfg["callbacks"] = callbacks
    return True


def _names(class_path, callback: type) -> bool:
    """Whether a config's ``class_path`` names `callback` (by any module path)."""
    module, _, name = str(class_path).rpartition(".")
    if name != callback.__name__:
        return False
    import importlib

    try:
        return getattr(importlib.import_module(module), name, None) is callback
    except ImportError:
        return False


def _has_get(item) -> bool:
    return hasattr(item, "get")
