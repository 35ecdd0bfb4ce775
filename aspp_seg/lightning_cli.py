"""aspp-seg's LightningCLI: fit / validate / test / predict, and the parser of every
config (`aspp_seg.config` builds the `fit` parser from this class).

Kept apart from `aspp_seg.cli` so that the ``aspp-seg`` entry point imports Lightning
only for the subcommands that need it.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from aspp_seg.callbacks import RunConfigCallback, add_result_files, add_segmentation_logger
from aspp_seg.checkpoints import check_fits, is_file_path, read_checkpoint
from aspp_seg.class_balance import resolve_class_weights, write_into_config
from aspp_seg.determinism import check_deterministic
from aspp_seg.fast_paths import FastPaths
from aspp_seg.module import SegmentationModule
from aspp_seg.resume import LoggedStepAlignment, resolve_last, restore_metrics


class AsppSegCLI(LightningCLI):
    """LightningCLI whose data module tells the model its classes."""

    def add_arguments_to_parser(self, parser) -> None:
        # how a step runs on the hardware at hand: a callback in every run, set under
        # the config's top-level `fast_paths:` (see aspp_seg.fast_paths)
        parser.add_lightning_class_args(FastPaths, "fast_paths")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters here: check the file first,
        # so a wrong --ckpt_path is one line, not a torch.load traceback
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if is_file_path(ckpt_path):
            self._checkpoint = (ckpt_path, read_checkpoint(ckpt_path))  # memory-mapped
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        if self.subcommand in ("fit", "validate", "test", "predict"):
            # `--ckpt_path last`: the previous version's checkpoint, not the new folder's
            resolve_last(self.config[self.subcommand], continue_run=self.subcommand == "fit")
            # W&B / TensorBoard runs get the IoU table, confusion matrix and overlays
            add_segmentation_logger(self.config[self.subcommand]["trainer"])
            # the per-class IoU tables and confusion matrix of every evaluation, as files
            add_result_files(self.config[self.subcommand]["trainer"])

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
        self._compute_class_weights()
        check_deterministic(self.trainer)
        restore_metrics(self.trainer)  # the metrics of the run that `--ckpt_path last` resumes
        self.trainer.callbacks.insert(0, LoggedStepAlignment())  # before any logging callback

    def _compute_class_weights(self) -> None:
        """``weight: median_frequency`` (or ``inverse_sqrt``) in the loss: computed from the
        training labels, and written into the config that the run saves."""
        loss = getattr(self.model, "loss", None)
        if loss is None or not hasattr(self.datamodule, "scan_training"):
            return
        computed = resolve_class_weights(loss, self.datamodule, self.model.class_names)
        if computed and self.config["fit"]["model"].get("loss") is not None:
            write_into_config(self.config["fit"]["model"]["loss"], computed)

    def before_validate(self) -> None:
        self._check_checkpoint()

    def before_test(self) -> None:
        self._check_checkpoint()

    def before_predict(self) -> None:
        self._check_checkpoint()


def lightning_cli(
    args: list[str] | None, *, cli_class: type[AsppSegCLI] = AsppSegCLI, **kwargs
) -> AsppSegCLI:
    """Runs LightningCLI on `args` (None: the process's command line) with aspp-seg's
    model and any LightningDataModule.

    Args:
        args: the command line after ``aspp-seg``.
        cli_class: `AsppSegCLI` or a subclass (`aspp_seg.config` parses with one).
        kwargs: more LightningCLI arguments (``run=False``, ``parser_kwargs``, ...).
    """
    return cli_class(
        SegmentationModule,
        LightningDataModule,
        **{
            "subclass_mode_data": True,
            "auto_configure_optimizers": False,
            "save_config_callback": RunConfigCallback,
            "save_config_kwargs": {"overwrite": True},
            **kwargs,
        },
        args=args,
    )
