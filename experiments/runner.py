"""One run of `experiments.table1`, from its `RunPlan` to its row of the tables.

`run_one` is a job's work: train the config to its budget in a child process
(``aspp-seg fit``, resuming from ``last.ckpt``; `train`), write ``fit/finished.json``,
evaluate the last checkpoint on the train and val splits (`evaluate`). The run folder
``<out>/runs/<label>/`` is the only state: `run_state` reads from it what a run still
needs before the sweep, `collect` reads its scores for the tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aspp_seg.data.io import write_file
from aspp_seg.errors import ConfigError, RunFailed, Terminated, UserError
from experiments.plans import REPO, RunPlan, group_name

SPLITS = ("train", "val")

FINISHED = "finished.json"  # in <run>/fit: the training reached its budget
PER_IMAGE = "val_confusion_per_image.npy"  # in <run>/eval: N x C x C counts
IMAGES = "val_images.txt"  # in <run>/eval: the N val images, in that order
# in <run>/eval, the same N images (`aspp_seg.evaluation.boundary`): N x C x 2 Boundary IoU
# (intersection, union), N x W x C x C confusion within w px of a truth boundary (W: TRIMAP_WIDTHS)
BOUNDARY_PER_IMAGE = "val_boundary_per_image.npy"
TRIMAP_PER_IMAGE = "val_trimap_per_image.npy"
# in <run>/eval, the val split's totals of the same (runs evaluated before the metric have none)
BOUNDARY_CSV = "val_boundary_iou.csv"  # one row: per-class Boundary IoU (%), mIoU
TRIMAP_CSV = "val_trimap_iou.csv"  # a row per band width: "band (px)", per-class IoU (%), mIoU
EVALUATED = "evaluated.json"  # in <run>/eval: the step of the weights the files score


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


def fit_command(
    name: str, config: Path, overrides: Sequence[str], out: Path, wandb_group: str | None
) -> list[str]:
    """``python -m aspp_seg.cli fit ...`` for run `name`, resuming its last checkpoint."""
    return [sys.executable, "-m", "aspp_seg.cli", "fit", "--config", str(config), *overrides,
            "--trainer.logger", _logger(out, name, "fit", wandb_group),
            "--ckpt_path", "last"]  # fmt: skip


def train(
    name: str, config: Path, overrides: list[str], out: Path, *, wandb_group: str | None,
    quiet: bool,
) -> Path:  # fmt: skip
    """Trains one config in a child process (resuming if a last checkpoint exists).

    ``fit/wall_s.txt`` adds up the training calls' wall time (a resumed run: the calls
    that trained; a call killed before it returned is not counted). With `quiet` the
    child's output is appended to ``fit/fit.log``, and a failure names its last
    ``aspp-seg: error:`` line.

    Raises:
        RunFailed: the child exited with an error; the message is one line.
        Terminated: a signal stopped the child (preemption, a cancelled job, Ctrl-C): the
            run resumes from its last.ckpt, it has not failed.
    """
    from experiments import sweep

    run = out / "runs" / name / "fit"
    run.mkdir(parents=True, exist_ok=True)
    command = fit_command(name, config, overrides, out, wandb_group)
    print(f"[table1] training {name}: {' '.join(command[2:])}", flush=True)
    before = _last_state(out, name)
    log_path = run / "fit.log"
    offset = log_path.stat().st_size if log_path.is_file() else 0
    log = log_path.open("a") if quiet else None  # a rerun keeps the earlier output
    start = time.perf_counter()
    try:
        stderr = subprocess.STDOUT if log else None
        code = sweep.run_child(command, stdout=log, stderr=stderr)
    finally:
        if log:
            log.close()
    # a call that trained nothing (the run had finished) keeps the recorded time
    if code != 0 or before is None or _last_state(out, name) != before:
        wall = run / "wall_s.txt"
        earlier = float(wall.read_text()) if wall.is_file() and before is not None else 0.0
        write_file(wall, f"{earlier + time.perf_counter() - start:.0f}\n")
    if code != 0:
        error = _last_error(log_path, offset) if quiet else None
        where = f"; its output: {log_path}" if quiet else ""
        status = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
        reason = f": {error}" if error else ""
        stopped = sweep.stopped_by(code)
        if stopped is not None:
            raise Terminated(f"training {name} stopped ({stopped.name}){reason}{where}", stopped)
        raise RunFailed(f"training {name} failed ({status}){reason}{where}")
    return last_checkpoint(out, name)


def _last_error(log: Path, offset: int) -> str | None:
    """The last ``aspp-seg: error:`` line that `log` got after `offset`, without prefix."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    errors = [line for line in text.splitlines() if line.startswith("aspp-seg: error:")]
    return errors[-1].removeprefix("aspp-seg: error:").strip() if errors else None


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


def checkpoint_step(checkpoint: Path) -> int:
    """Optimizer steps done in `checkpoint`."""
    from aspp_seg.evaluation.checkpoints import read_checkpoint

    return int(read_checkpoint(checkpoint).get("global_step", 0))


def read_iou_csv(path: Path) -> dict:
    """``{"columns": [class columns], "iou": float64[C] in [0, 1] (NaN: no pixels),
    "miou": float}`` from an IoU CSV (`aspp_seg.evaluation.metrics.iou_csv`)."""
    with path.open(newline="") as f:
        row = next(csv.DictReader(f))
    columns = [c for c in row if c != "mIoU"]
    return {"columns": columns, **_iou_row(row, columns)}


def _iou_row(row: dict[str, str], columns: Sequence[str]) -> dict:
    """``{"iou": float64[C], "miou"}`` (fractions, NaN where empty) of a CSV row in %."""
    values = [float(row[c]) / 100 if row[c] else math.nan for c in columns]
    miou = float(row["mIoU"]) / 100 if row.get("mIoU") else math.nan
    return {"iou": np.array(values), "miou": miou}


def read_trimap_csv(path: Path) -> dict:
    """``{"columns", "widths": W ints, "iou": W x C fractions, "miou": W}`` from a trimap
    CSV (`aspp_seg.evaluation.reports.trimap_csv`: a row per band width, px)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c not in ("band (px)", "mIoU")]
    scores = [_iou_row(row, columns) for row in rows]
    return {"columns": columns, "widths": [int(row["band (px)"]) for row in rows],
            "iou": np.array([s["iou"] for s in scores]),
            "miou": np.array([s["miou"] for s in scores])}  # fmt: skip


def read_boundary(folder: Path) -> dict:
    """``{"boundary": read_iou_csv of BOUNDARY_CSV, "trimap": read_trimap_csv of
    TRIMAP_CSV}`` from an ``eval/`` folder, each None where its file is not there."""
    boundary, trimap = folder / BOUNDARY_CSV, folder / TRIMAP_CSV
    return {"boundary": read_iou_csv(boundary) if boundary.is_file() else None,
            "trimap": read_trimap_csv(trimap) if trimap.is_file() else None}  # fmt: skip


def _evaluation_files(out: Path, name: str) -> list[Path]:
    """The files a complete evaluation leaves, ``evaluated.json`` last."""
    folder = out / "runs" / name / "eval"
    return [*(folder / f"{s}_iou.csv" for s in SPLITS), folder / PER_IMAGE, folder / IMAGES,
            folder / EVALUATED]  # fmt: skip


def evaluated(out: Path, name: str, checkpoint: Path) -> bool:
    """Whether the run's evaluation files exist and are newer than `checkpoint`."""
    trained = checkpoint.stat().st_mtime
    return all(p.is_file() and p.stat().st_mtime >= trained for p in _evaluation_files(out, name))


def _mark_evaluated(out: Path, name: str, checkpoint: Path) -> None:
    """Writes ``evaluated.json``, after the other evaluation files: the step of the weights
    they score, which `kept_scores` compares with ``finished.json``."""
    step = {"step": checkpoint_step(checkpoint), "checkpoint": checkpoint.name}
    record = {**step, "mtime": checkpoint.stat().st_mtime_ns}
    write_file(out / "runs" / name / "eval" / EVALUATED, json.dumps(record) + "\n")


def _read_scores(folder: Path) -> dict[str, dict]:
    """The ``{train,val}_iou.csv`` of an ``eval/`` folder."""
    return {split: read_iou_csv(folder / f"{split}_iou.csv") for split in SPLITS}


def kept_scores(plan: RunPlan) -> dict | None:
    """The finished record of a run whose checkpoints are gone but whose scores stay
    (deleted to save disk, or a run folder copied without them): ``finished.json`` at
    the budget, and evaluation files that ``evaluated.json`` says score that step."""
    record = fit_record(plan)
    if record is None:
        return None
    try:
        scored = json.loads((plan.folder / "eval" / EVALUATED).read_text())
    except (OSError, ValueError):
        return None
    complete = all(p.is_file() for p in _evaluation_files(plan.out, plan.label))
    return record if complete and scored.get("step") == record["steps"] else None


def evaluate(
    name: str, config: Path, overrides: list[str], out: Path, checkpoint: Path
) -> dict[str, dict]:
    """IoU of `checkpoint` on the train and val splits (evaluation transform: no
    augmentation), cached in ``runs/<name>/eval/<split>_iou.csv``, with the val split's
    per-image confusion counts (``val_confusion_per_image.npy``, N x C x C int64, rows
    truth; the image names in ``val_images.txt``) for the paired bootstrap, and beside
    them the boundary metrics: per image (`BOUNDARY_PER_IMAGE`, `TRIMAP_PER_IMAGE`) and
    per split (``<split>_boundary_iou.csv``, ``<split>_trimap_iou.csv``)."""
    folder = out / "runs" / name / "eval"
    if evaluated(out, name, checkpoint):
        return _read_scores(folder)

    from aspp_seg.cli.lightning_cli import lightning_cli
    from aspp_seg.evaluation.reports import save_boundary_results, write_iou_table
    from experiments.per_image import PerImageCounts

    print(f"[table1] evaluating {name} on {', '.join(SPLITS)}: {checkpoint}", flush=True)
    cli = lightning_cli(
        ["--config", str(config), *overrides,
         "--trainer.logger", _logger(out, name, "eval", None),
         "--trainer.devices", "1", "--trainer.strategy", "auto",
         "--trainer.enable_progress_bar", "false"],
        run=False,
    )  # fmt: skip
    counts = PerImageCounts()
    cli.trainer.callbacks.append(counts)
    results = {}
    for split in SPLITS:
        # the train split is evaluated like val: `data.test_split` is the config switch
        cli.datamodule.test_split = split
        cli.datamodule.datasets.pop("test", None)
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(checkpoint),
                         verbose=False)  # fmt: skip
        if split == "val":
            array = io.BytesIO()
            np.save(array, counts.counts())
            write_file(folder / PER_IMAGE, array.getvalue())
            write_file(folder / IMAGES, "".join(f"{n}\n" for n in counts.names))
            for path, per_image in ((BOUNDARY_PER_IMAGE, counts.boundary()),
                                    (TRIMAP_PER_IMAGE, counts.trimap())):  # fmt: skip
                array = io.BytesIO()
                np.save(array, per_image)
                write_file(folder / path, array.getvalue())
        write_iou_table(folder, f"{split}_iou", cli.model.last_result, cli.model.class_names)
        # <split>_boundary_iou.md/.csv, <split>_trimap_iou.md/.csv and their counts
        save_boundary_results(folder, split, cli.model.last_result, cli.model.class_names)
        results[split] = read_iou_csv(folder / f"{split}_iou.csv")
    _mark_evaluated(out, name, checkpoint)
    return results


def prepare_data(plans: Sequence[RunPlan]) -> None:
    """Generates the synthetic demo set once, before jobs that read it run side by side
    (each would otherwise start generating it in the same folder)."""
    generated: dict[str, tuple] = {}
    for plan in plans:
        if plan.demo is not None and generated.setdefault(*plan.demo) != plan.demo[1]:
            raise ConfigError(f"runs ask for different demo sets in {plan.demo[0]}")
    for root, settings in generated.items():
        generate_demo(Path(root), dict(settings))


def generate_demo(root: Path, requested: dict[str, int]) -> None:
    """The demo set with `requested` settings under `root`, unless it is there.

    A new set is generated into a staging folder beside `root` and renamed into place,
    so a killed generation never leaves a tree at `root` (a staging folder that a dead
    process on this host left is removed). A set with other settings is regenerated in
    place by the generator, whose ``.generating`` marker keeps a half-written set from
    being used.
    """
    from aspp_seg.data.datasets import demo

    demo.check_settings(requested)
    demo.check_demo_root(root)
    settings = demo.settings_to_generate(root, requested)
    if settings is None:
        return
    if root.is_dir() and next(root.iterdir(), None) is not None:
        demo.ensure_demo(root, requested)
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    prefix, host = f".{root.name}.generating-", socket.gethostname()
    for stale in root.parent.glob(f"{prefix}{host}-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = root.with_name(f"{prefix}{host}-{os.getpid()}")
    print(f"[table1] generating the synthetic demo data set in {root} ...", flush=True)
    try:
        demo.generate_demo_cityscapes(staging, **settings)
        try:
            staging.rename(root)  # over no folder or an empty one, else it fails
        except OSError:
            if demo.settings_to_generate(root, requested) is not None:
                raise  # not another process's complete set either
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def fit_record(plan: RunPlan) -> dict | None:
    """``fit/finished.json`` when it says the training reached this plan's budget."""
    try:
        record = json.loads((plan.folder / "fit" / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    if plan.steps is None:
        return record if record.get("budget") is None else None
    return record if int(record.get("steps", -1)) >= plan.steps else None


def _mark_finished(plan: RunPlan, steps: int) -> None:
    record = {"steps": steps, "budget": plan.steps, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "code": code_version()}  # fmt: skip
    write_file(plan.folder / "fit" / FINISHED, json.dumps(record) + "\n")


def code_version() -> str | None:
    """The commit of the code that runs (``<sha>``, ``<sha>+changes`` when tracked files
    differ from it), for each run's record; None outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    try:
        sha = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}+changes" if changed else sha


def _abandoned(fit: Path) -> bool:
    """Whether `fit` holds an attempt killed before its first ``last.ckpt``: its config
    (or a checkpoint) is there, so ``aspp-seg fit`` would refuse to start over it."""
    checkpoints = fit / "checkpoints"
    return (fit / "config.yaml").is_file() or any(checkpoints.glob("*.ckpt"))


def _set_aside(fit: Path) -> None:
    """Moves an attempt that left no ``last.ckpt`` to ``fit_abandoned_<time>`` beside
    it (nothing is deleted; there is nothing to resume), so that the run starts anew."""
    if not _abandoned(fit):
        return
    aside = fit.with_name(f"fit_abandoned_{time.strftime('%Y%m%d-%H%M%S')}")
    fit.rename(aside)
    print(f"[table1] {fit} had no last.ckpt to resume: moved to {aside}", flush=True)


def run_one(plan: RunPlan) -> None:
    """The work of one job: train to the budget (resuming from ``last.ckpt``), mark the
    training finished, evaluate. Raises `UserError` with a one-line reason."""
    if plan.error:
        raise ConfigError(plan.error)
    if fit_record(plan) is None:
        if _last_state(plan.out, plan.label) is None:
            _set_aside(plan.folder / "fit")
        checkpoint = train(plan.label, plan.config, list(plan.overrides), plan.out,
                           wandb_group=plan.wandb_group, quiet=True)  # fmt: skip
        steps = checkpoint_step(checkpoint)
        if plan.steps is not None and steps < plan.steps:
            raise RunFailed(f"training {plan.label} ended at step {steps} of {plan.steps}; "
                            f"its output: {plan.folder / 'fit' / 'fit.log'}")  # fmt: skip
        _mark_finished(plan, steps)
    evaluate(plan.label, plan.config, list(plan.overrides), plan.out,
             last_checkpoint(plan.out, plan.label))  # fmt: skip


@dataclass(frozen=True)
class RunState:
    """Where a run stands before the sweep: `what` is ``finished``, ``evaluate`` (trained,
    not evaluated), ``resume``, ``new``, ``running`` (another job has it) or ``failed``
    (it cannot start); `detail` says more; `submit`: whether a job is needed."""

    what: str
    detail: str = ""

    @property
    def submit(self) -> bool:
        return self.what in ("evaluate", "resume", "new")


def run_state(plan: RunPlan) -> RunState:
    """The run's state from its folder; reads it, writes nothing."""
    from experiments import sweep

    if plan.error:
        return RunState("failed", plan.error)
    holder = sweep.running(plan.folder)
    if holder is not None:
        return RunState("running", holder)
    found = _last_state(plan.out, plan.label)
    if found is None:
        kept = kept_scores(plan)
        if kept is not None:
            return RunState("finished", f"step {kept['steps']} (scores kept, no checkpoint)")
        if _abandoned(plan.folder / "fit"):
            return RunState("new", "(its attempt left no checkpoint: set aside, started anew)")
        return RunState("new")
    record = fit_record(plan)
    if record is None:
        return RunState("resume", f"from step {checkpoint_step(Path(found[0]))}")
    if evaluated(plan.out, plan.label, last_checkpoint(plan.out, plan.label)):
        return RunState("finished", f"step {record['steps']}")
    return RunState("evaluate", f"trained to step {record['steps']}")


def collect(plan: RunPlan, *, evaluate_missing: bool = False) -> dict:
    """A run's row of the tables, from its folder.

    Returns:
        ``{"config", "group", "seed", "budget", "state", "reason", "steps", "wall_s",
        "train", "val", "per_image", "boundary", "trimap"}``; ``state`` is ``finished``,
        ``unfinished`` (its last checkpoint, evaluated by ``--collect``), ``failed``,
        ``running`` or ``not run``; the scores are present for the first two (the val
        split's boundary scores, `read_boundary`, where the run has them).
    """
    from experiments import sweep

    wall = plan.folder / "fit" / "wall_s.txt"
    result = {"config": plan.config.stem, "group": group_name(plan.spec), "seed": plan.spec.seed,
              "budget": plan.budget, "state": "not run", "reason": None, "steps": None,
              "wall_s": float(wall.read_text()) if wall.is_file() else None,
              "per_image": None}  # fmt: skip
    if plan.error:
        return {**result, "state": "failed", "reason": plan.error}
    found = _last_state(plan.out, plan.label)
    checkpoint = Path(found[0]) if found else None
    kept = kept_scores(plan) if checkpoint is None else None
    if kept is not None:
        folder = plan.folder / "eval"
        return {**result, **_read_scores(folder), **read_boundary(folder), "state": "finished",
                "steps": kept["steps"], "per_image": folder / PER_IMAGE}  # fmt: skip
    done = checkpoint is not None and evaluated(plan.out, plan.label, checkpoint)
    if checkpoint is not None and (done or evaluate_missing):
        scores = evaluate(plan.label, plan.config, list(plan.overrides), plan.out, checkpoint)
        record = fit_record(plan)
        steps = record["steps"] if record else checkpoint_step(checkpoint)
        per_image = plan.folder / "eval" / PER_IMAGE
        return {**result, **scores, **read_boundary(per_image.parent),
                "state": "finished" if record else "unfinished", "steps": steps,
                "per_image": per_image}  # fmt: skip
    holder = sweep.running(plan.folder)
    if holder is not None:
        return {**result, "state": "running", "reason": holder}
    reason = sweep.failure(plan.folder)
    if reason is not None:
        return {**result, "state": "failed", "reason": reason}
    return {**result, "state": "unfinished" if checkpoint else "not run"}
