"""`RunConfigCallback`: saves the resolved config, never over another run's, and never
over the run's own when it is resumed."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from aspp_seg.data.io import write_file
from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.checkpoints import CHECKPOINT_KEY
from aspp_seg.training.resume import RESUME_FLAG


class RunConfigCallback(SaveConfigCallback):
    """LightningCLI's config saver that also gives the resolved config to W&B and
    remembers the W&B run id (and the config's path) in every checkpoint, so that
    ``--ckpt_path last`` resumes the same W&B run (see `aspp_seg.training.resume`).

    It never replaces another run's config: a new ``fit`` (no checkpoint to resume)
    whose folder already holds a ``config.yaml`` or checkpoints is refused before
    anything is written (it would overwrite them); a resumed ``fit`` keeps the run's
    ``config.yaml`` as it is and writes settings that differ from it to
    ``config.resumed-at-step-<N>.yaml`` (`resume`); ``validate`` / ``test`` /
    ``predict`` keep an existing ``config.yaml`` unless the CLI made the folder their
    own evaluation folder (`replace`, see `aspp_seg.training.resume.evaluation_folder`).
    Files are written through a temporary file and a rename: a kill leaves the old
    file or none.

    Attributes:
        replace: an existing ``config.yaml`` of validate / test / predict is this
            command's earlier output and may be replaced.
        resume: set by the CLI for a resumed fit (`aspp_seg.training.resume.check_resume`):
            the settings file the run recorded, and the name of this resume's own.
    """

    _config_path: str | None = None
    replace = False
    resume = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.save_to_log_dir or self.already_saved:
            super().setup(trainer, pl_module, stage)
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        if log_dir is None:
            super().setup(trainer, pl_module, stage)
            return
        path = Path(log_dir, self.config_filename)
        if stage == "fit" and not self.config.get("ckpt_path"):
            _refuse_another_run(path)
        elif stage == "fit" and path.is_file():  # a resume: the run's record stays
            recorded, new = (
                getattr(self.resume, "recorded", None),
                getattr(self.resume, "new_record", None),
            )
            if new is None:  # the same settings: the checkpoints name the record they follow
                self._keep(trainer, pl_module, stage, recorded or path)
                return
            path = path.with_name(new)
        elif stage != "fit" and path.is_file() and not self.replace:
            # e.g. validate with no logger and no checkpoint writes into
            # default_root_dir: a config there (a training run's, which
            # `load_model` and `--config` read back) stays as it is
            self.already_saved = True
            return
        self._config_path = str(path.resolve())
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            config = self.config.clone()
            config.pop(RESUME_FLAG, None)  # a switch of this command, not a setting of the run
            write_file(path, self.parser.dump(config, skip_unset=False))
            self.save_config(trainer, pl_module, stage)
        self.already_saved = trainer.strategy.broadcast(True)

    def _keep(self, trainer: Trainer, pl_module: LightningModule, stage: str, path: Path) -> None:
        self._config_path = str(Path(path).resolve())
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
        self.already_saved = trainer.strategy.broadcast(True)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.config.as_dict() if hasattr(self.config, "as_dict") else dict(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"cli": config}, allow_val_change=True)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        own = checkpoint.setdefault(CHECKPOINT_KEY, {})
        if self._config_path is not None:
            own["config"] = self._config_path  # named when a checkpoint does not fit a config
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version is not None:
                own["wandb_id"] = str(logger.version)


def _refuse_another_run(config: Path) -> None:
    """A new fit must not write over the config or checkpoints of a run in its folder."""
    folder = config.parent
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"))
    if not config.is_file() and not checkpoints:
        return
    found = config if config.is_file() else checkpoints[0]
    raise ConfigError(
        f"{folder} holds another run ({found}): a new fit would overwrite it; resume it "
        "with --ckpt_path last, or give the new run its own folder (trainer.default_root_dir "
        "or the logger's save_dir / name / version)"
    )
