"""aspp-seg's LightningCLI: fit / validate / test / predict, and the parser of every
config (`aspp_seg.config` builds the `fit` parser from this class).

Kept apart from `aspp_seg.cli` so that the ``aspp-seg`` entry point imports Lightning
only for the subcommands that need it.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from aspp_seg.callbacks import RunConfigCallback, add_segmentation_logger
from aspp_seg.determinism import check_deterministic
from aspp_seg.module import SegmentationModule
from aspp_seg.resume import resolve_last, restore_metrics


class AsppSegCLI(LightningCLI):
    """LightningCLI whose data module tells the model its classes."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        if self.subcommand in ("fit", "validate", "test", "predict"):
            # `--ckpt_path last`: the previous version's checkpoint, not the new folder's
            resolve_last(self.config[self.subcommand], continue_run=self.subcommand == "fit")
            # W&B / TensorBoard runs get the IoU table, confusion matrix and overlays
            add_segmentation_logger(self.config[self.subcommand]["trainer"])

    def before_fit(self) -> None:
        check_deterministic(self.trainer)
        restore_metrics(self.trainer)  # the metrics of the run that `--ckpt_path last` resumes


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
