"""Reproduce the study's Table 1 (per-class IoU) and Table 2 (train / val mIoU) from runs.

For every config it trains (``aspp-seg fit``, in a child process so that multi-GPU
DDP works as usual), evaluates the last checkpoint on the val split and, without
augmentation, on the train split, and writes both tables as Markdown, each row beside
the study's published row and the difference:

    python -m experiments.table1 --configs dl1 dl2 dl3 dl4 dl1_150ep segnet \\
        --data /data/cityscapes                       # the reproduction (GPUs, days)
    python -m experiments.table1 --configs dl1 dl2 --data demo --budget tiny
                                                      # end to end on a CPU in a minute
    python -m experiments.table1 --configs dl1 dl1@seed=1 dl2 dl3 dl4 segnet \\
        --overlay configs/overlay/study_camvid.yaml --budget 90 --out runs/table1_camvid
                                                      # the question on CamVid, on a CPU

``NAME@seed=S`` runs a config again with another seed (its row is labelled
``NAME_seedS``); a config run with several seeds gives the seed spread that the tables'
note compares the other rows with. ``NAME@steps=N`` gives one run its own step budget.
``--overlay`` layers a YAML file over every config (another data set, a smaller net);
its ``model.net.init_args`` keys that a config's net builder does not take (SegNet has
no ``backbone``) are left out for that config, and said so. The tables' columns are the
data set's classes; the study's rows and differences are shown for Cityscapes only.

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from jsonargparse import ArgumentParser

from aspp_seg.data.labels import TABLE1_COLUMNS
from aspp_seg.errors import ConfigError, UserError
from aspp_seg.evaluation.reports import IoURow, iou_table, write_iou_table
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


@dataclass(frozen=True)
class RunSpec:
    """One row of the tables: a config, optionally with its own seed or step budget.

    Attributes:
        label: the row's name and run folder (``dl1``, ``dl1_seed1``, ``segnet_steps60``).
        config: the config as given: a name in ``configs/`` (``dl1``) or a YAML path.
        seed: ``seed_everything`` for this run; None: the config's own.
        steps: this run's step budget; None: ``--budget``.
    """

    label: str
    config: str
    seed: int | None = None
    steps: int | None = None


def parse_run(text: str) -> RunSpec:
    """``dl1``, ``dl1@seed=1``, ``segnet@steps=60`` (options may be combined)."""
    config, *options = text.split("@")
    label, settings = Path(config).stem, {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in ("seed", "steps") or not value.isdigit():
            raise ConfigError(f"--configs {text}: {option!r} is not seed=<int> or steps=<int>")
        settings[key] = int(value)
        label += f"_{key}{value}"
    return RunSpec(label, config, settings.get("seed"), settings.get("steps"))


def overlay_for(overlay: Path, net_parameters: set[str], label: str, out: Path) -> Path:
    """`overlay` without the ``model.net.init_args`` keys that the net builder does not
    take, written to the run's folder when something was left out (else `overlay`)."""
    try:
        settings = yaml.safe_load(overlay.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"--overlay {overlay}: cannot be read as YAML ({error})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"--overlay {overlay}: expected a mapping of settings")
    nested = settings.get("model", {}).get("net", {}).get("init_args", {})
    dotted = {k.removeprefix("model.net.init_args.").split(".")[0]: k for k in settings
              if k.startswith("model.net.init_args.")}  # fmt: skip
    dropped = sorted({*nested, *dotted} - net_parameters)
    if not dropped:
        return overlay
    for key in dropped:
        nested.pop(key, None)
        settings.pop(dotted.get(key, ""), None)
    print(f"[table1] {label}: its net takes no {', '.join(dropped)}; left out of {overlay.name}")
    path = out / "runs" / label / f"overlay_{overlay.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def _net_parameters(path: Path) -> set[str]:
    """Keyword arguments of the config's ``model.net`` builder."""
    from aspp_seg.cli.config import read_config

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
        raise ConfigError(f"--data {data}: not a folder; give the data set's root or 'demo'")
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
    before = _last_state(out, name)
    log = (run / "fit.log").open("a") if quiet else None  # a rerun keeps the earlier output
    start = time.perf_counter()
    try:
        stderr = subprocess.STDOUT if log else None
        code = subprocess.run(command, stdout=log, stderr=stderr).returncode
    finally:
        if log:
            log.close()
    # the wall time of this call: a resumed run counts only what was left; a call that
    # trained nothing (the run had finished) keeps the recorded time of the one that did
    if code != 0 or before is None or _last_state(out, name) != before:
        (run / "wall_s.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    if code != 0:
        where = f"; its output: {run / 'fit.log'}" if quiet else ""
        raise UserError(f"training {name} ({config}) failed with exit status {code}{where}")
    return last_checkpoint(out, name)


def _last_state(out: Path, name: str) -> tuple[str, int] | None:
    """(path, mtime) of the run's newest ``last*.ckpt``; None when there is none."""
    folder = out / "runs" / name / "fit" / "checkpoints"
    found = sorted((p.stat().st_mtime_ns, str(p)) for p in folder.glob("last*.ckpt"))
    return (found[-1][1], found[-1][0]) if found else None


def last_checkpoint(out: Path, name: str) -> Path:
    """The run's ``last.ckpt`` (the final weights, which the study reports)."""
    folder = out / "runs" / name / "fit" / "checkpoints"
    found = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no last.ckpt in {folder}: train {name} first (run without --collect)")
    return found[-1]


def run_budget(out: Path, label: str, checkpoint: Path) -> dict:
    """``{"steps": optimizer steps in `checkpoint`, "wall_s": the last training call's
    wall time or None}``."""
    from aspp_seg.evaluation.checkpoints import read_checkpoint

    wall = out / "runs" / label / "fit" / "wall_s.txt"
    return {
        "steps": int(read_checkpoint(checkpoint).get("global_step", 0)),
        "wall_s": float(wall.read_text()) if wall.is_file() else None,
    }


def read_iou_csv(path: Path) -> dict:
    """``{"columns": [class columns], "iou": float64[C] in [0, 1] (NaN: no pixels),
    "miou": float}`` from an IoU CSV (`aspp_seg.evaluation.metrics.iou_csv`)."""
    with path.open(newline="") as f:
        row = next(csv.DictReader(f))
    columns = [c for c in row if c != "mIoU"]
    values = [float(row[c]) / 100 if row[c] else math.nan for c in columns]
    miou = float(row["mIoU"]) / 100 if row.get("mIoU") else math.nan
    return {"columns": columns, "iou": np.array(values), "miou": miou}


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

    from aspp_seg.cli.lightning_cli import lightning_cli

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
        write_iou_table(folder, f"{split}_iou", cli.model.last_result, cli.model.class_names)
        results[split] = read_iou_csv(folder / f"{split}_iou.csv")
    return results


# ------------------------------------------------------------------------ tables


def _fmt(value: float | None, *, sign: bool = False) -> str:
    """A percentage of Table 2 (Table 1 is `aspp_seg.evaluation.metrics.iou_table`'s)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _diff(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs):
        return None
    return ours - theirs


def _columns(results: dict[str, dict]) -> list[str]:
    """The class columns that all runs share."""
    columns = {tuple(r["val"]["columns"]) for r in results.values()}
    if len(columns) != 1:
        raise ConfigError("the runs were evaluated on different classes; tabulate them apart")
    return list(columns.pop())


def _on_cityscapes(results: dict[str, dict]) -> bool:
    """Whether the runs were scored on Cityscapes' 19 classes, the study's columns."""
    return _columns(results) == list(TABLE1_COLUMNS)


def _method(label: str, result: dict, study: dict[str, StudyRow]) -> str:
    row = study.get(result["config"])
    return row.method if row else label


def seed_groups(results: dict[str, dict]) -> dict[str, list[str]]:
    """Config -> the labels of its runs, for configs run more than once at one budget
    (runs of a config that differ in steps are not seeds of one another)."""
    groups: dict[tuple, list[str]] = {}
    for label, result in results.items():
        groups.setdefault((result["config"], result.get("steps")), []).append(label)
    return {key[0]: labels for key, labels in groups.items() if len(labels) > 1}


def table1(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: per-class val IoU (%) of each run; on Cityscapes the study's row and the
    difference below it; for a config run with several seeds, their spread (max - min)."""
    cityscapes = _on_cityscapes(results)
    rows = []
    for label, result in results.items():
        ours = [*result["val"]["iou"], result["val"]["miou"]]  # fractions
        rows.append(IoURow(ours, labels=(_method(label, result, study), f"this run ({label})")))
        row = study.get(result["config"]) if cityscapes else None
        if row:
            theirs = [v / 100 for v in (*row.iou, row.miou)]  # the study prints percentages
            diffs = [_diff(a, b) for a, b in zip(ours, theirs, strict=True)]
            rows.append(IoURow(theirs, labels=("", "study")))
            rows.append(IoURow(diffs, labels=("", "difference"), signed=True))
        elif cityscapes:
            rows.append(IoURow([None] * len(ours), labels=("", "study")))
    for config, labels in seed_groups(results).items():
        values = np.array([[*results[k]["val"]["iou"], results[k]["val"]["miou"]] for k in labels])
        spread = values.max(axis=0) - values.min(axis=0)
        method = _method(config, results[labels[0]], study)
        rows.append(IoURow(list(spread), labels=(method, f"seed spread ({len(labels)} runs)")))
    return iou_table(rows, _columns(results), label_columns=["Method", "Source"])


def table2(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: train and val mIoU (%) of each run with its steps and training time; on
    Cityscapes beside the study's Table 2."""
    cityscapes = _on_cityscapes(results)
    head = ["Method", "steps", "train time"]
    if cityscapes:
        head += ["train mIoU", "study", "difference", "val mIoU", "study", "difference"]
    else:
        head += ["train mIoU", "val mIoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, result in results.items():
        train, val = 100 * result["train"]["miou"], 100 * result["val"]["miou"]
        wall = result.get("wall_s")
        cells = [f"{_method(label, result, study)} ({label})", str(result.get("steps", "-")),
                 "-" if wall is None else f"{wall / 60:.1f} min"]  # fmt: skip
        if cityscapes:
            row = study.get(result["config"])
            s_train, s_val = (row.train_miou, row.val_miou) if row else (None, None)
            cells += [_fmt(train), _fmt(s_train), _fmt(_diff(train, s_train), sign=True),
                      _fmt(val), _fmt(s_val), _fmt(_diff(val, s_val), sign=True)]  # fmt: skip
        else:
            cells += [_fmt(train), _fmt(val)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_note(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Which rows' val mIoU differ from a multi-seed config's mean by more than its
    seed spread; empty when no config ran with several seeds."""
    notes = []
    for config, labels in seed_groups(results).items():
        vals = [100 * results[k]["val"]["miou"] for k in labels]
        mean, spread = float(np.mean(vals)), max(vals) - min(vals)
        method = _method(config, results[labels[0]], study)
        beyond, within = [], []
        for label, result in results.items():
            if label in labels:
                continue
            diff = 100 * result["val"]["miou"] - mean
            text = f"{_method(label, result, study)} ({diff:+.2f})"
            (beyond if abs(diff) > spread else within).append(text)
        notes.append(
            f"{method} over {len(labels)} seeds: val mIoU "
            f"{', '.join(f'{v:.2f}' for v in vals)} (spread {spread:.2f} points, mean "
            f"{mean:.2f}). Beyond that spread from its mean: {', '.join(beyond) or 'none'}; "
            f"within it: {', '.join(within) or 'none'}."
        )
    return "\n\n".join(notes) + "\n" if notes else ""


def caveat(data: str | None, budget: str, cityscapes: bool = True) -> str:
    """What the numbers are worth; empty for the real reproduction."""
    if not cityscapes:
        return (
            "> Not the study's data set: these rows compare the study's variants with each "
            f"other on this data at a `{budget}`-step budget (and with the seed spread), "
            "not with the study's Cityscapes numbers.\n\n"
        )
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
    note = caveat(data, budget, _on_cityscapes(results))
    seeds = seed_note(results, study)
    seeds = f"\n{seeds}" if seeds else ""
    t1 = out / "table1.md"
    t1.write_text(
        "# Table 1: per-class IoU (%) on the validation split\n\n"
        + note + table1(results, study) + seeds
    )  # fmt: skip
    t2 = out / "table2.md"
    t2.write_text("# Table 2: train and val mIoU (%)\n\n" + note + table2(results, study) + seeds)
    serial = {
        name: {split: {"iou": [None if math.isnan(v) else float(v) for v in r[split]["iou"]],
                       "miou": None if math.isnan(r[split]["miou"]) else r[split]["miou"]}
               for split in SPLITS}
        for name, r in results.items()
    }  # fmt: skip
    for name, r in results.items():
        serial[name].update(config=r["config"], steps=r.get("steps"), wall_s=r.get("wall_s"))
    meta = {"data": data, "budget": budget, "meaningful": not note,
            "columns": _columns(results)}  # fmt: skip
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
                        "or YAML paths, each optionally NAME@seed=S and/or @steps=N")  # fmt: skip
    parser.add_argument("--overlay", nargs="*", type=Path, default=[],
                        help="YAML files layered over every config, e.g. "
                        "configs/overlay/study_camvid.yaml (CamVid on a CPU)")  # fmt: skip
    parser.add_argument("--data", type=str | None, default=None,
                        help="'demo' (synthetic, generated in --out) or the data set's root "
                        "(Cityscapes unless an overlay says otherwise); default: the "
                        "configs' own data.init_args.root")  # fmt: skip
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
    for overlay in args.overlay:
        if not Path(overlay).is_file():
            raise ConfigError(f"--overlay {overlay}: no such file")
    results = {}
    for spec in map(parse_run, args.configs):
        config = config_path(spec.config)
        parameters = _net_parameters(config)
        budget = str(spec.steps) if spec.steps else args.budget
        overrides = [
            *(arg for o in args.overlay
              for arg in ("--config", str(overlay_for(Path(o), parameters, spec.label, out)))),
            *data_overrides(args.data, out, budget),
            *budget_overrides(budget, parameters),
            *(["--seed_everything", str(spec.seed)] if spec.seed is not None else []),
            *extra,
        ]  # fmt: skip
        if args.collect:
            checkpoint = last_checkpoint(out, spec.label)
        else:
            checkpoint = train(spec.label, config, overrides, out, wandb_group=args.wandb_group,
                               quiet=args.quiet)  # fmt: skip
        results[spec.label] = {
            **evaluate(spec.label, config, overrides, out, checkpoint),
            "config": config.stem,
            **run_budget(out, spec.label, checkpoint),
        }
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
