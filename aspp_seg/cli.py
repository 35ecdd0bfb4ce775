"""The `aspp-seg` command: LightningCLI's fit / validate / test / predict, plus the
subcommands in `aspp_seg.commands` (summary, evaluate, ...)."""

from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from aspp_seg.callbacks import RunConfigCallback, add_segmentation_logger
from aspp_seg.checkpoints import check_fits, is_file_path, read_checkpoint
from aspp_seg.commands import discover
from aspp_seg.determinism import check_deterministic
from aspp_seg.errors import UserError
from aspp_seg.fast_paths import FastPaths
from aspp_seg.module import SegmentationModule
from aspp_seg.resume import resolve_last, restore_metrics


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
            read_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        if self.subcommand in ("fit", "validate", "test", "predict"):
            # `--ckpt_path last`: the previous version's checkpoint, not the new folder's
            resolve_last(self.config[self.subcommand], continue_run=self.subcommand == "fit")
            # W&B / TensorBoard runs get the IoU table, confusion matrix and overlays
            add_segmentation_logger(self.config[self.subcommand]["trainer"])

    def _check_checkpoint(self) -> None:
        """The checkpoint's tensors fit the configured net, or one line says which does not."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if is_file_path(ckpt_path):
            check_fits(ckpt_path, read_checkpoint(ckpt_path), self.model)

    def before_fit(self) -> None:
        self._check_checkpoint()
        check_deterministic(self.trainer)
        restore_metrics(self.trainer)  # the metrics of the run that `--ckpt_path last` resumes

    def before_validate(self) -> None:
        self._check_checkpoint()

    def before_test(self) -> None:
        self._check_checkpoint()

    def before_predict(self) -> None:
        self._check_checkpoint()


def lightning_cli(args: list[str] | None, **kwargs) -> AsppSegCLI:
    """Runs LightningCLI on `args` (None: the process's command line) with aspp-seg's
    model and any LightningDataModule."""
    return AsppSegCLI(
        SegmentationModule,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        **kwargs,
    )


def _user_error(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any (the CLI's parser wraps it in its own)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a data worker re-raised it."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in lines[0]:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(lines)


def _run(args: list[str] | None) -> None:
    """Dispatches `args` (None: the process's command line, which LightningCLI then reads
    itself; it warns on every run when given sys.argv a second time)."""
    argv = sys.argv[1:] if args is None else args
    commands = discover()
    if argv and argv[0] in commands:
        commands[argv[0]].main(argv[1:])
        return
    if argv and argv[0] not in ("-h", "--help"):
        lightning_cli(args)
        return
    try:
        lightning_cli(args if argv else ["--help"])
    finally:
        if commands:
            width = max(map(len, commands))
            print("\nmore subcommands (aspp-seg <command> --help):")
            for name, module in commands.items():
                print(f"  {name:<{width}}  {module.HELP}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the `aspp-seg` console script."""
    try:
        _run(None if args is None else list(args))
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        print(f"aspp-seg: error: {_one_line(user_error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
