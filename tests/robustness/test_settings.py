"""Settings that would train nothing, be dropped, or fail after the net and data are
built; resumes that would change what the run trains.

Rows that must be refused before anything is built also name a backbone that does not
exist: building the net would fail with another message, so the expected line proves
the order.
"""

from __future__ import annotations

import pytest
import yaml
from harness import Case, check

FIT = ("fit", "--config", "{config}")
NO_NET = ("--model.net.init_args.backbone", "no_such_backbone")  # fails only when built
BATCH_2 = ("--data.init_args.batch_size", "2")
RESUME = ("fit", "--config", "{config}", "--ckpt_path", "last")
RATES = ("--model.net.init_args.aspp.init_args.rates", "[3, 6, 9]")
LONGER = ("--trainer.max_epochs", "2")  # the finished run stopped at epoch 1 (step 2)
RUN = "runs/tiny/version_0"
# what a resumed fit of the tiny run writes into its folder (config.yaml is not one)
RESUMED_WRITES = (
    f"{RUN}/checkpoints/*",
    f"{RUN}/metrics.csv",
    f"{RUN}/hparams.yaml",
    f"{RUN}/val_*",  # the result files of its validation
)


def _split(optimizer_setting: str) -> tuple[str, str]:
    """``"lr 0.1"`` -> ``("--model.optimizer.init_args.lr", "0.1")``."""
    key, value = optimizer_setting.split()
    return f"--model.optimizer.init_args.{key}", value


def _relative_logger(ws) -> None:
    """The tiny config with a relative logger folder, as every shipped config has."""
    config = yaml.safe_load(ws.config.read_text())
    config["trainer"]["logger"]["init_args"]["save_dir"] = "runs"
    ws.config.write_text(yaml.safe_dump(config, sort_keys=False))


CASES = [
    # --- a fit that would train nothing: refused before the net is built
    Case(
        "max_epochs 0",
        ("fit", "--config", "{config}", "--trainer.max_epochs", "0", *NO_NET),
        2,
        r"^aspp-seg: error: trainer\.max_epochs=0 trains nothing",
    ),
    Case(
        "max_steps 0",
        ("fit", "--config", "{config}", "--trainer.max_steps", "0", *NO_NET),
        2,
        r"^aspp-seg: error: trainer\.max_steps=0 trains nothing",
    ),
    Case(
        "limit_train_batches 0",
        ("fit", "--config", "{config}", "--trainer.limit_train_batches", "0", *NO_NET),
        2,
        r"^aspp-seg: error: trainer\.limit_train_batches=0\.0 trains nothing",
    ),
    # --- optimizer values torch refuses only once the net and data exist
    Case(
        "negative learning rate",
        ("fit", "--config", "{config}", "--model.optimizer.init_args.lr=-0.1", *NO_NET),
        2,
        r"^aspp-seg: error: model\.optimizer\.init_args\.lr=-0\.1 .*must be > 0",
    ),
    Case(
        "negative weight decay",
        ("fit", "--config", "{config}", "--model.optimizer.init_args.weight_decay=-1e-4", *NO_NET),
        2,
        r"^aspp-seg: error: model\.optimizer\.init_args\.weight_decay=-0\.0001 must be >= 0",
    ),
    Case(
        "momentum 1",
        ("fit", "--config", "{config}", "--model.optimizer.init_args.momentum", "1", *NO_NET),
        2,
        r"^aspp-seg: error: model\.optimizer\.init_args\.momentum=1\.0 must be in \[0, 1\)",
    ),
    Case(
        "Nesterov without momentum: torch's own check, run early",
        (*FIT, "--model.optimizer.init_args.nesterov", "true", *_split("momentum 0"), *NO_NET),
        2,
        r"^aspp-seg: error: model\.optimizer\.init_args \(SGD\): Nesterov momentum requires",
    ),
    Case(
        "AdamW beta outside [0, 1)",
        (*FIT, "--model.optimizer", "torch.optim.AdamW", *_split("betas [0.9,1.5]"), *NO_NET),
        2,
        r"^aspp-seg: error: model\.optimizer\.init_args\.betas=\[0\.9, 1\.5\] must be in",
    ),
    # --- config mistakes that already hold
    Case(
        "unknown optimizer setting",
        ("fit", "--config", "{config}", "--model.optimizer.init_args.nosuch", "1"),
        2,
        r"^aspp-seg: error: .*nosuch.*--help lists the settings\)$",
    ),
    Case(
        "learning rate of the wrong type",
        ("fit", "--config", "{config}", "--model.optimizer.init_args.lr", "fast"),
        2,
        r"^aspp-seg: error: .*lr.*fast.*--help lists the settings\)$",
    ),
    # --- default_root_dir is honoured: the relative logger folder goes under it
    Case(
        "default_root_dir over a relative logger folder",
        ("fit", "--config", "{config}", "--trainer.default_root_dir", "{work}/elsewhere"),
        0,
        r"",
        setup=_relative_logger,
        writes=("elsewhere/runs/tiny/version_0/**",),  # nothing under ./runs
    ),
    # --- resumes that change what is trained
    Case(
        "resume with other ASPP rates: refused, the run untouched",
        (*RESUME, *LONGER, *RATES),
        2,
        r"^aspp-seg: error: --ckpt_path \S+last\.ckpt: 1 setting\(s\) that change what is "
        r"trained differ .*model\.net\.init_args\.aspp\.init_args\.rates: \[6, 12, 18\] -> "
        r"\[3, 6, 9\]; .*--resume_with_changed_settings true",
    ),
    Case(
        "resume from the checkpoint file with another learning rate and batch",
        (*FIT, "--ckpt_path", "{ckpt}", *LONGER, *_split("lr 0.1"), *BATCH_2),
        2,
        r"^aspp-seg: error: .*2 setting\(s\).*data\.init_args\.batch_size: 4 -> 2; "
        r"model\.optimizer\.init_args\.lr: 0\.05 -> 0\.1;",
    ),
    Case(
        "resume that only runs longer: an extension",
        (*RESUME, *LONGER),
        0,
        r"",
        writes=(*RESUMED_WRITES, f"{RUN}/config.resumed-at-step-2.yaml"),
    ),
    Case(
        "resume with the same settings (a requeued job): no new record",
        RESUME,  # it trained its steps already: stops at once
        0,
        r"",
        writes=RESUMED_WRITES,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case, ws, run_cli):
    check(case, ws, run_cli)


def test_resume_with_changed_settings_keeps_both_records(ws, run_cli):
    """The opt-in: the run goes on with the new rates; config.yaml stays as the run
    started (the harness checks its bytes), the new settings are in a second file, and
    the new checkpoint names that file, so a later resume compares with it."""
    case = Case(
        "resume with the opt-in",
        (*RESUME, *LONGER, *RATES, "--resume_with_changed_settings", "true"),
        0,
        r"",
        writes=(*RESUMED_WRITES, f"{RUN}/config.resumed-at-step-2.yaml"),
    )
    check(case, ws, run_cli)
    record = ws.run / "config.resumed-at-step-2.yaml"
    settings = yaml.safe_load(record.read_text())
    assert settings["model"]["net"]["init_args"]["aspp"]["init_args"]["rates"] == [3, 6, 9]
    assert "resume_with_changed_settings" not in settings  # a switch, not a setting
    original = yaml.safe_load((ws.run / "config.yaml").read_text())
    assert original["model"]["net"]["init_args"]["aspp"]["init_args"]["rates"] == [6, 12, 18]

    import torch

    # the newest last*.ckpt (a copied run folder gets last-v1.ckpt: Lightning's version
    # counter does not know the copy's old last.ckpt as its own)
    newest = max(ws.ckpt.parent.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(newest, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert state["aspp_seg"]["config"] == str(record.resolve())
    # load_model (and export, which uses it) builds the net its weights were trained as
    from aspp_seg import load_model

    loaded = load_model(newest)
    rates = [
        m.dilation[0] for m in loaded.net.head.aspp.modules() if getattr(m, "dilation", (1,))[0] > 1
    ]
    assert rates == [3, 6, 9]
    # going on with the first rates now differs from the newest record
    back = Case(
        "resume with the first rates after the change",
        (*RESUME, "--trainer.max_epochs", "3"),
        2,
        r"rates: \[3, 6, 9\] -> \[6, 12, 18\]",
    )
    check(back, ws, run_cli)


def test_default_root_dir_takes_relative_folders_only(tmp_path):
    """Relative logger and checkpoint folders go under default_root_dir (absolute, so the
    saved config reads back the same); absolute folders and URLs stay where they point."""
    from jsonargparse import Namespace

    from aspp_seg.training.resume import follow_root_dir

    def logger(kind: str, **args) -> Namespace:
        return Namespace(
            class_path=f"lightning.pytorch.loggers.{kind}", init_args=Namespace(**args)
        )

    trainer = Namespace(
        default_root_dir=str(tmp_path),
        logger=[
            logger("CSVLogger", save_dir="runs", name="demo"),
            logger("TensorBoardLogger", save_dir="/abs/tb", name="demo"),
            logger("WandbLogger", save_dir="s3://bucket/runs", project="p"),
        ],
        callbacks=[
            Namespace(
                class_path="aspp_seg.training.callbacks.ModelCheckpoint",
                init_args=Namespace(dirpath="ckpts"),
            )
        ],
    )
    follow_root_dir(trainer)
    assert [lg.init_args.save_dir for lg in trainer.logger] == [
        str(tmp_path / "runs"),
        "/abs/tb",
        "s3://bucket/runs",
    ]
    assert trainer.callbacks[0].init_args.dirpath == str(tmp_path / "ckpts")
    follow_root_dir(trainer)  # read back from the saved config: the same folders
    assert trainer.logger[0].init_args.save_dir == str(tmp_path / "runs")
