"""Reproduce the study's Table 1 (per-class IoU) and Table 2 (train / val mIoU) from runs.

For every config it trains (``aspp-seg fit``, in a child process so that multi-GPU
DDP works as usual), evaluates the last checkpoint on the val split and, without
augmentation, on the train split, and writes both tables as Markdown, each row beside
the study's published row and the difference:

    python -m experiments.table1 --configs dl1 dl2 dl3 dl4 dl1_150ep segnet \\
        --data /data/cityscapes                       # the reproduction (GPUs, days)
    python -m experiments.table1 --configs dl1 dl2 --data demo --budget tiny
                                                      # end to end on a CPU in a minute

Everything lands in ``--out`` (default ``runs/table1``): ``runs/<config>/fit``
(the training run, checkpoints, metrics), ``runs/<config>/eval/{train,val}_iou.csv``,
``table1.md``, ``table2.md`` and ``results.json``. Running the same command again
resumes unfinished trainings (``--ckpt_path last``) and reuses finished evaluations;
``--collect`` only reads and evaluates what is there, without training.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

from aspp_seg.data.labels import CITYSCAPES_CLASSES, TABLE1_COLUMNS
from aspp_seg.errors import ConfigError, UserError
from aspp_seg.metrics import IoURow, iou_table, write_iou_table
from experiments.study import StudyRow, load_study

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SPLITS = ("train", "val")
BUDGETS = ("full", "tiny", "<steps>")

# A tiny budget shrinks what exists in the config's net builder: these keys, if taken.
TINY_NET = {"backbone": "resnet10t", "pretrained": "false", "channels": "16"}


def config_path(name: str) -> Path:
    """``dl1`` -> ``configs/dl1.yaml``; a path to a YAML file is taken as it is."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("_"))
        raise ConfigError(f"--configs {name}: no {path}; known configs: {', '.join(known)}")
    return path


def _net_parameters(path: Path) -> set[str]:
    """Keyword arguments of the config's ``model.net`` builder."""
    from aspp_seg.config import read_config

    class_path = read_config(["--config", str(path)]).model.net.class_path
    module, _, name = class_path.rpartition(".")
    try:
        builder = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return set()
    return set(inspect.signature(builder).parameters)


def budget_overrides(budget: str, net_parameters: set[str]) -> list[str]:
    """CLI overrides for a training budget.

    Args:
        budget: ``full`` (the config's own schedule), ``tiny`` (a few steps of a small
            net: a smoke test whose numbers mean nothing) or a number of steps.
        net_parameters: what the config's net builder accepts.
    """
    if budget == "full":
        return []
    if budget == "tiny":
        args = ["--trainer.max_steps", "4", "--trainer.max_epochs", "1",
                "--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0",
                "--trainer.log_every_n_steps", "1",
                "--data.init_args.batch_size", "2",
                "--data.init_args.num_workers", "0"]  # fmt: skip
        for key, value in TINY_NET.items():
            if key in net_parameters:
                args += [f"--model.net.init_args.{key}", value]
        return args
    if budget.isdigit() and int(budget) > 0:
        return ["--trainer.max_steps", budget, "--trainer.max_epochs", "-1"]
    raise ConfigError(f"--budget {budget!r} is not one of {', '.join(BUDGETS)}")


def data_overrides(data: str | None, out: Path, budget: str) -> list[str]:
    """CLI overrides that point a config at ``demo`` (synthetic) or a Cityscapes root."""
    if data is None:
        return []
    if data == "demo":
        size = ["64", "128", "8", "4"] if budget == "tiny" else ["128", "256", "240", "60"]
        return ["--data.class_path", "aspp_seg.data.DemoDataModule",
                "--data.init_args.root", str(out / "demo_data"),
                "--data.init_args.crop_size", "null",
                "--data.init_args.height", size[0], "--data.init_args.width", size[1],
                "--data.init_args.num_train", size[2],
                "--data.init_args.num_val", size[3]]  # fmt: skip
    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"--data {data}: not a folder; give a Cityscapes root or 'demo'")
    return ["--data.init_args.root", str(root.resolve())]


def _logger(out: Path, name: str, version: str, wandb_group: str | None) -> str:
    csv_logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(out / "runs"), "name": name, "version": version},
    }
    if wandb_group is None:
        return json.dumps(csv_logger)
    wandb_logger = {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"save_dir": str(out / "runs"), "project": "aspp-seg", "name": name,
                      "group": wandb_group, "tags": ["table1", name], "offline": True},
    }  # fmt: skip
    return json.dumps([csv_logger, wandb_logger])


def train(
    name: str, config: Path, overrides: list[str], out: Path, *, wandb_group: str | None,
    quiet: bool,
) -> Path:  # fmt: skip
    """Trains one config in a child process (resuming if a last checkpoint exists)."""
    run = out / "runs" / name / "fit"
    run.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "aspp_seg.cli", "fit", "--config", str(config), *overrides,
               "--trainer.logger", _logger(out, name, "fit", wandb_group),
               "--ckpt_path", "last"]  # fmt: skip
    print(f"[table1] training {name}: {' '.join(command[2:])}", flush=True)
    log = (run / "fit.log").open("w") if quiet else None
    try:
        stderr = subprocess.STDOUT if log else None
        code = subprocess.run(command, stdout=log, stderr=stderr).returncode
    finally:
        if log:
            log.close()
    if code != 0:
        where = f"; its output: {run / 'fit.log'}" if quiet else ""
        raise UserError(f"training {name} ({config}) failed with exit status {code}{where}")
    return last_checkpoint(out, name)


def last_checkpoint(out: Path, name: str) -> Path:
    """The run's ``last.ckpt`` (the final weights, which the study reports)."""
    folder = out / "runs" / name / "fit" / "checkpoints"
    found = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no last.ckpt in {folder}: train {name} first (run without --collect)")
    return found[-1]


def read_iou_csv(path: Path) -> dict:
    """``{"iou": float64[19] in [0, 1] (NaN: no pixels), "miou": float}`` from an IoU CSV."""
    with path.open(newline="") as f:
        row = next(csv.DictReader(f))
    values = [float(row[c]) / 100 if row.get(c) else math.nan for c in TABLE1_COLUMNS]
    miou = float(row["mIoU"]) / 100 if row.get("mIoU") else math.nan
    return {"iou": np.array(values), "miou": miou}


def evaluate(
    name: str, config: Path, overrides: list[str], out: Path, checkpoint: Path
) -> dict[str, dict]:
    """IoU of `checkpoint` on the train and val splits (evaluation transform: no
    augmentation), cached in ``runs/<name>/eval/<split>_iou.csv``."""
    folder = out / "runs" / name / "eval"
    cached = {s: folder / f"{s}_iou.csv" for s in SPLITS}
    trained = checkpoint.stat().st_mtime
    if all(p.is_file() and p.stat().st_mtime >= trained for p in cached.values()):
        return {s: read_iou_csv(p) for s, p in cached.items()}

    from aspp_seg.lightning_cli import lightning_cli

    print(f"[table1] evaluating {name} on {', '.join(SPLITS)}: {checkpoint}", flush=True)
    cli = lightning_cli(
        ["--config", str(config), *overrides,
         "--trainer.logger", _logger(out, name, "eval", None),
         "--trainer.devices", "1", "--trainer.strategy", "auto",
         "--trainer.enable_progress_bar", "false"],
        run=False,
    )  # fmt: skip
    results = {}
    for split in SPLITS:
        # the train split is evaluated like val: `data.test_split` is the config switch
        cli.datamodule.test_split = split
        cli.datamodule.datasets.pop("test", None)
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(checkpoint),
                         verbose=False)  # fmt: skip
        result = cli.model.last_result
        results[split] = {"iou": np.asarray(result["iou"]), "miou": float(result["miou"])}
        write_iou_table(folder, f"{split}_iou", result, cli.model.class_names)
    return results


# ------------------------------------------------------------------------ tables


def _fmt(value: float | None, *, sign: bool = False) -> str:
    """A percentage of Table 2 (Table 1 is `aspp_seg.metrics.iou_table`'s)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _diff(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs):
        return None
    return ours - theirs


def table1(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: per-class val IoU (%) of each run, the study's row and the difference."""
    rows = []
    for name, result in results.items():
        ours = [*result["val"]["iou"], result["val"]["miou"]]  # fractions
        row = study.get(name)
        rows.append(IoURow(ours, labels=(row.method if row else name, f"this run ({name})")))
        if row:
            theirs = [v / 100 for v in (*row.iou, row.miou)]  # the study prints percentages
            diffs = [_diff(a, b) for a, b in zip(ours, theirs, strict=True)]
            rows.append(IoURow(theirs, labels=("", "study")))
            rows.append(IoURow(diffs, labels=("", "difference"), signed=True))
        else:
            rows.append(IoURow([None] * len(ours), labels=("", "study")))
    return iou_table(rows, CITYSCAPES_CLASSES, label_columns=["Method", "Source"])


def table2(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: train and val mIoU (%) of each run beside the study's Table 2."""
    lines = [
        "| Method | train mIoU | study | difference | val mIoU | study | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        row = study.get(name)
        train, val = 100 * result["train"]["miou"], 100 * result["val"]["miou"]
        s_train, s_val = (row.train_miou, row.val_miou) if row else (None, None)
        cells = [f"{row.method if row else name} ({name})",
                 _fmt(train), _fmt(s_train), _fmt(_diff(train, s_train), sign=True),
                 _fmt(val), _fmt(s_val), _fmt(_diff(val, s_val), sign=True)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def caveat(data: str | None, budget: str) -> str:
    """What the numbers are worth; empty for the real reproduction."""
    if data != "demo" and budget == "full":
        return ""
    where = "the synthetic demo data" if data == "demo" else "Cityscapes"
    return (
        f"> **These numbers mean nothing.** They come from a `{budget}` training budget on "
        f"{where}, not from the study's protocol (40 epochs of Cityscapes fine, "
        "ResNet-101 ImageNet weights); they only show that the pipeline runs end to end. "
        "Run `--data <cityscapes root> --budget full` for the reproduction.\n\n"
    )


def write_tables(
    results: dict[str, dict], out: Path, *, data: str | None, budget: str
) -> tuple[Path, Path]:
    """Writes ``table1.md``, ``table2.md`` and ``results.json`` into `out`."""
    study = load_study()
    note = caveat(data, budget)
    t1 = out / "table1.md"
    t1.write_text(
        "# Table 1: per-class IoU (%) on the validation split\n\n" + note + table1(results, study)
    )
    t2 = out / "table2.md"
    t2.write_text("# Table 2: train and val mIoU (%)\n\n" + note + table2(results, study))
    serial = {
        name: {split: {"iou": [None if math.isnan(v) else float(v) for v in r[split]["iou"]],
                       "miou": None if math.isnan(r[split]["miou"]) else r[split]["miou"]}
               for split in SPLITS}
        for name, r in results.items()
    }  # fmt: skip
    meta = {"data": data, "budget": budget, "meaningful": not note}
    (out / "results.json").write_text(json.dumps({"meta": meta, "runs": serial}, indent=1))
    return t1, t2


# -------------------------------------------------------------------------- main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m experiments.table1",
        description="Train and evaluate configs, then write the study's Tables 1 and 2 "
        "beside its published numbers.",
    )
    parser.add_argument("--configs", nargs="+", type=str, required=True,
                        help="config names in configs/ (dl1 dl2 dl3 dl4 dl1_150ep segnet) "
                        "or YAML paths")  # fmt: skip
    parser.add_argument("--data", type=str | None, default=None,
                        help="'demo' (synthetic, generated in --out) or a Cityscapes root; "
                        "default: the configs' own data.init_args.root")  # fmt: skip
    parser.add_argument("--budget", type=str, default="full",
                        help="'full' (the configs' schedules), 'tiny' (a CPU smoke test) or "
                        "a number of training steps")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs") / "table1",
                        help="folder for the runs and the tables")  # fmt: skip
    parser.add_argument(
        "--collect",
        type=bool,
        default=False,
        help="do not train: evaluate / read the finished runs in --out",
    )
    parser.add_argument(
        "--wandb_group",
        type=str | None,
        default=None,
        help="also log every run to W&B (offline) in this group",
    )
    parser.add_argument("--set", nargs="*", type=str, default=[],
                        help="extra settings for every run, KEY=VALUE as on the aspp-seg "
                        "command line, e.g. model.net.init_args.pretrained=false")  # fmt: skip
    parser.add_argument(
        "--quiet", type=bool, default=False, help="write each training's output to its run folder"
    )
    return parser


def run(argv: Sequence[str]) -> tuple[Path, Path]:
    args = build_parser().parse_args(list(argv))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    extra = [f"--{item}" for item in args.set]
    results = {}
    for name in args.configs:
        config = config_path(name)
        label = config.stem
        overrides = [
            *data_overrides(args.data, out, args.budget),
            *budget_overrides(args.budget, _net_parameters(config)),
            *extra,
        ]
        if args.collect:
            checkpoint = last_checkpoint(out, label)
        else:
            checkpoint = train(label, config, overrides, out, wandb_group=args.wandb_group,
                               quiet=args.quiet)  # fmt: skip
        results[label] = evaluate(label, config, overrides, out, checkpoint)
    t1, t2 = write_tables(results, out, data=args.data, budget=args.budget)
    print(f"\n{t1.read_text()}\n{t2.read_text()}\nwritten: {t1}, {t2}", flush=True)
    return t1, t2


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"table1: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
