"""Reproduce the study's Table 1 (per-class IoU) and Table 2 (train / val mIoU) from runs,
over seeds, with each variant's difference to DL-1 and whether it is beyond noise.

Each run (a config, optionally with a seed or its own step budget) is one job, run by
submitit (`experiments.sweep`): as local processes, ``--jobs`` at once, or as a SLURM job
array. A job trains the config (``aspp-seg fit``, in a child process so that multi-GPU
DDP works as usual), evaluates the last checkpoint on the val split and, without
augmentation, on the train split; the tables are then written from the run folders:

    python -m experiments.table1 --configs dl1 dl2 dl3 dl4 dl1_150ep segnet \\
        --data /data/cityscapes                       # the reproduction (GPUs, days)
    python -m experiments.table1 --configs dl1 dl2 --data demo --budget tiny
                                                      # end to end on a CPU in a minute
    python -m experiments.table1 --configs dl1 dl2 dl3 dl4 --seeds 0 1 2 --jobs 2 \\
        --overlay configs/overlay/study_camvid.yaml --budget 1440 --out runs/study_camvid
                                                      # the question on CamVid, on a CPU
    python -m experiments.table1 --configs dl1 dl2 dl3 dl4 --seeds 0 1 2 \\
        --data /data/cityscapes --cluster slurm --partition gpu --gpus_per_job 1 \\
        --time_min 1440 --slurm account=abc --dry-run  # what SLURM would get

``--seeds 0 1 2`` runs every config once per seed (rows ``NAME_seedS``); ``NAME@seed=S``
does it for one config and ``NAME@steps=N`` gives one run its own step budget.
``--overlay`` layers a YAML file over every config (another data set, a smaller net);
its ``model.net.init_args`` keys that a config's net builder does not take (SegNet has
no ``backbone``) are left out for that config, and said so.

Everything lands in ``--out`` (default ``runs/table1``): per run ``runs/<label>/fit``
(the training run: checkpoints, ``metrics.csv``, ``fit.log``, ``wall_s.txt`` and, once
it reached its budget, ``finished.json``), ``runs/<label>/eval/`` (``{train,val}_iou.csv``
and the per-image val confusion counts of the bootstrap), ``failed.txt`` when its last
job failed; then ``table1.md``, ``table2.md``, ``results.json`` and ``sweep.log``. The run
folders are the only state: the same command again skips finished runs, resumes
interrupted ones from their ``last.ckpt`` and starts the rest; ``--collect`` only
evaluates and tabulates what is there.

``--grid`` sweeps any setting, not only configs and seeds. Each axis is one argument,
its levels split at the commas outside brackets; several axes give their product:

    --grid data.init_args.image_size=[176,240],[360,480]   # a setting: one value a level
    --grid aspp_input=11x15:,23x30:configs/overlay/study_camvid_360.yaml
                       # an overlay file a level, after --overlay's (11x15: adds nothing)
    --grid budget=920,3450                                 # the step budget a level

Each level has a name (``image_size=360x480``, the last part of the key and the value;
``aspp_input=23x30``) and its own folder ``<out>/<axis>=<level>/`` (one below the other
for several axes), which is an ordinary ``--out`` folder: what the same command without
``--grid``, with the level's setting, writes there (runs, ``table1.md``, ``table2.md``,
``results.json``). Above them, ``<out>`` gets ``sweep.log``, ``submitit/`` (every cell's
jobs: one SLURM array) and ``table_levels.md`` / ``table_levels.json``: each config's val
mIoU per level (mean ± sd, n) and, within each level, every pair of configs with one
interval over seeds and val images together (hierarchical bootstrap) and a verdict
corrected for the level's number of pairs (Holm). A level's setting under
``model.net.init_args`` that a config's net does not take is left out for that config.

``--collect`` reads the records alone: no data folder is needed (``--data`` may name one
that is not there; without it, ``results.json`` keeps the data its last writer named),
and a run of ``--configs`` that has no folder is left out of the tables.

One command at a time works in an ``--out`` (`holding`: an ``fcntl.flock`` on
``<out>/.table1.lock``, POSIX only, as submitit is): a second command on the same folder
says which process has it and exits with status 1, leaving the folder as it was. A grid
holds ``<out>``'s lock and each level folder's.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import io
import itertools
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from jsonargparse import ArgumentParser

from aspp_seg.data.io import write_file
from aspp_seg.errors import ConfigError, Interrupted, RunFailed, Terminated, UserError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SPLITS = ("train", "val")
BUDGETS = ("full", "tiny", "<steps>")
TINY_STEPS = 4

# A tiny budget shrinks what exists in the config's net builder: these keys, if taken.
TINY_NET = {"backbone": "resnet10t", "pretrained": "false", "channels": "16"}

FINISHED = "finished.json"  # in <run>/fit: the training reached its budget
PER_IMAGE = "val_confusion_per_image.npy"  # in <run>/eval: N x C x C counts
IMAGES = "val_images.txt"  # in <run>/eval: the N val images, in that order
# in <run>/eval, the same N images (`aspp_seg.evaluation.boundary`): N x C x 2 Boundary IoU
# (intersection, union), N x W x C x C confusion within w px of a truth boundary (W: TRIMAP_WIDTHS)
BOUNDARY_PER_IMAGE = "val_boundary_per_image.npy"
TRIMAP_PER_IMAGE = "val_trimap_per_image.npy"
EVALUATED = "evaluated.json"  # in <run>/eval: the step of the weights the files score
LOCK = ".table1.lock"  # in --out: held by the command working there (`holding`)


class FolderInUse(UserError):
    """Another table1 command works in ``--out``; this one left it alone. Exit status 1:
    nothing is wrong with the command, it can run once the other has ended."""

    exit_code = 1


@contextlib.contextmanager
def holding(out: Path) -> Iterator[None]:
    """Holds ``<out>/.table1.lock`` while the block runs: two table1 commands on one folder
    would share its demo data, run folders, ``submitit/`` and tables.

    An advisory ``fcntl.flock`` (Linux, macOS; on NFS Linux takes it as a lock the server
    keeps). The kernel drops it when the process ends however it ends, so a killed command
    leaves no stale lock to clear. The file names its holder for the other's message; it
    is written in place, not replaced, because the lock belongs to the file's inode.

    Raises:
        FolderInUse: another process holds it; nothing under `out` was changed.
    """
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"{out} is in use by another table1 ({_holder(fd)}); run this command again "
                "once it has ended (it goes on from the run folders), or give another --out"
            ) from None
        except OSError as error:  # ENOLCK: an NFS mount without its lock service
            raise ConfigError(f"--out {out}: cannot lock {out / LOCK} ({error.strerror}); "
                              "give an --out on a file system with locks") from None  # fmt: skip
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _holder(fd: int) -> str:
    """``pid N on HOST since TIME`` from a held lock file (its holder may be writing it)."""
    for _ in range(20):
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            return f"pid {holder['pid']} on {holder['host']} since {holder['started']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "pid unknown"


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
    """One run: a config, optionally with its own seed or step budget.

    Attributes:
        label: the run's name and folder (``dl1``, ``dl1_seed1``, ``segnet_steps60``).
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


def expand_runs(configs: Sequence[str], seeds: Sequence[int] = ()) -> list[RunSpec]:
    """The runs of ``--configs`` and ``--seeds``: every config once per seed (labels
    ``<config>_seed<S>``), or as given when there are no seeds."""
    texts = []
    for text in configs:
        if seeds and "@seed=" in text:
            raise ConfigError(f"--configs {text}: give seeds with @seed= or --seeds, not both")
        texts += [f"{text}@seed={s}" for s in seeds] if seeds else [text]
    specs = [parse_run(text) for text in texts]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise ConfigError(f"--configs: runs {', '.join(twice)} are given twice")
    return specs


# -------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Level:
    """One level of a ``--grid`` axis: what it sets in every run of its cells.

    Attributes:
        axis: the axis' name (``image_size``, ``aspp_input``, ``budget``).
        name: the level's name (``360x480``, ``23x30``, ``920``); with the axis it names
            the level's folder, ``<axis>=<name>``.
        setting: (key, value as given) of a setting axis (``data.init_args.image_size``,
            ``[360,480]``), as on the aspp-seg command line.
        overlay: the level's YAML file of an overlay axis, layered after ``--overlay``
            (None: the level adds nothing).
        budget: the level's ``--budget`` on the ``budget`` axis.
    """

    axis: str
    name: str
    setting: tuple[str, str] | None = None
    overlay: Path | None = None
    budget: str | None = None

    @property
    def folder(self) -> str:
        return f"{self.axis}={self.name}"


@dataclass(frozen=True)
class Cell:
    """One cell of the grid, a level of each axis; with no ``--grid``, the one cell of
    no levels, whose folder is ``--out`` itself."""

    levels: tuple[Level, ...] = ()

    @property
    def name(self) -> str:
        """``image_size=360x480`` (``/`` between axes); empty without a grid."""
        return "/".join(level.folder for level in self.levels)

    def out(self, root: Path) -> Path:
        """The cell's folder: an ordinary ``--out`` folder of the runner."""
        return root.joinpath(*(level.folder for level in self.levels))

    @property
    def budget(self) -> str | None:
        return next((lv.budget for lv in self.levels if lv.budget is not None), None)


_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
# runner options that a setting axis would bypass (the budget decides when a run is done)
_NOT_SETTINGS = {"trainer.max_steps": "--grid budget=N1,N2",
                 "trainer.max_epochs": "--grid budget=N1,N2",
                 "seed_everything": "--seeds"}  # fmt: skip


def split_levels(text: str) -> list[str]:
    """``[176,240],[360,480]`` -> ``["[176,240]", "[360,480]"]``: split at the commas
    outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _value_name(value: str, option: str) -> str:
    """A setting's value as a folder name: ``[360,480]`` -> ``360x480``, ``0.05``."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    items = parsed if isinstance(parsed, list) else [parsed]
    words = {True: "true", False: "false", None: "null"}
    name = "x".join(words.get(v, str(v)) if isinstance(v, bool | None) else str(v)
                    for v in items)  # fmt: skip
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{option}: the value {value!r} makes no folder name; give the "
                          "axis as NAME=LEVEL:FILE,... with an overlay file per level")  # fmt: skip
    return name


def parse_axis(text: str) -> list[Level]:
    """One ``--grid`` axis: ``KEY=V1,V2,...`` (a setting, one value per level),
    ``NAME=L1:FILE1,L2:FILE2,...`` (an overlay file per level; ``L1:`` adds none) or
    ``budget=N1,N2,...`` (the runs' step budget per level).

    Raises:
        ConfigError: the axis does not parse, names a missing file or repeats a level.
    """
    option = f"--grid {text}"
    axis, sep, rest = text.partition("=")
    if not sep or not axis or not rest:
        raise ConfigError(f"{option}: expected KEY=V1,V2 or NAME=LEVEL:FILE,LEVEL:FILE")
    if axis in _NOT_SETTINGS:
        raise ConfigError(f"{option}: {axis} is the runner's to set; use {_NOT_SETTINGS[axis]}")
    items = [item.strip() for item in split_levels(rest)]
    overlays = [re.fullmatch(r"([A-Za-z0-9_.+-]+):(.*)", item) for item in items]
    levels = []
    if all(overlays) and "." not in axis:
        if not _NAME.fullmatch(axis):
            raise ConfigError(f"{option}: the axis name {axis!r} makes no folder name")
        for match in overlays:
            name, file = match.group(1), match.group(2).strip()
            if file and not Path(file).is_file():
                raise ConfigError(f"{option}: level {name}: no such file {file}")
            levels.append(Level(axis, name, overlay=Path(file) if file else None))
    elif axis == "budget":
        for item in items:
            budget_overrides(item, set())  # a budget the runner knows, or ConfigError
            levels.append(Level(axis, item, budget=item))
    else:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", axis):
            raise ConfigError(f"{option}: {axis!r} is not a setting's key (data.init_args.x)")
        if any(overlays):
            raise ConfigError(f"{option}: give every level as LEVEL:FILE, or none")
        name = axis.rpartition(".")[2]
        levels = [Level(name, _value_name(item, option), setting=(axis, item))
                  for item in items]  # fmt: skip
    names = [level.name for level in levels]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"{option}: every level needs a name of its own, got {names}")
    return levels


def grid_cells(axes: Sequence[str]) -> list[Cell]:
    """The cells of ``--grid``: the cartesian product of its axes, the first axis
    outermost; without axes, one cell (``--out`` itself)."""
    parsed = [parse_axis(text) for text in axes]
    names = [levels[0].axis for levels in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"--grid: axes {', '.join(names)}: each axis once")
    return [Cell(tuple(levels)) for levels in itertools.product(*parsed)]


def group_name(spec: RunSpec) -> str:
    """The config a run is a seed of: its label without the seed (``dl1``,
    ``segnet_steps60``); runs of one group are compared as seeds of one another."""
    name = Path(spec.config).stem
    return f"{name}_steps{spec.steps}" if spec.steps else name


def overlay_for(
    overlay: Path, net_parameters: set[str], label: str, out: Path, *, write: bool = True
) -> Path:
    """`overlay` without the ``model.net.init_args`` keys that the net builder does not
    take, written to the run's folder when something was left out (else `overlay`).
    ``write=False`` (``--dry-run``): written to a temporary folder instead."""
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
    if write:
        print(f"[table1] {label}: its net takes no {', '.join(dropped)}; left out of "
              f"{overlay.name}")  # fmt: skip
        path = out / "runs" / label / f"overlay_{overlay.name}"
    else:  # --dry-run writes nothing under --out, but the config must still parse
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="table1-dry-run-")) / f"overlay_{overlay.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, yaml.safe_dump(settings, sort_keys=False))
    return path


@functools.cache
def _net_parameters(path: Path) -> set[str]:
    """Keyword arguments of the config's ``model.net`` builder."""
    import importlib
    import inspect

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
        args = ["--trainer.max_steps", str(TINY_STEPS), "--trainer.max_epochs", "1",
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


def budget_steps(budget: str) -> int | None:
    """The optimizer steps a finished run of `budget` has; None for ``full`` (the
    config's schedule: a run that exits without error is finished)."""
    if budget == "tiny":
        return TINY_STEPS
    return int(budget) if budget.isdigit() else None


def data_overrides(data: str | None, out: Path, budget: str, *, check: bool = True) -> list[str]:
    """CLI overrides that point a config at ``demo`` (synthetic) or a Cityscapes root.
    ``check=False`` (``--collect``, which reads the records): the root need not exist."""
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
    if not root.is_dir() and check:
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
    values = [float(row[c]) / 100 if row[c] else math.nan for c in columns]
    miou = float(row["mIoU"]) / 100 if row.get("mIoU") else math.nan
    return {"columns": columns, "iou": np.array(values), "miou": miou}


def _evaluation_files(out: Path, name: str) -> list[Path]:
    folder = out / "runs" / name / "eval"
    return [*(folder / f"{s}_iou.csv" for s in SPLITS), folder / PER_IMAGE, folder / IMAGES]


def evaluated(out: Path, name: str, checkpoint: Path) -> bool:
    """Whether the run's evaluation files exist and are newer than `checkpoint`."""
    trained = checkpoint.stat().st_mtime
    return all(p.is_file() and p.stat().st_mtime >= trained for p in _evaluation_files(out, name))


def _mark_evaluated(out: Path, name: str, checkpoint: Path) -> None:
    """Writes ``evaluated.json`` (the step the files score); files scored by an earlier
    version of this runner get theirs when the run's state is next read."""
    record = out / "runs" / name / "eval" / EVALUATED
    mtime = checkpoint.stat().st_mtime_ns
    if not record.is_file() or json.loads(record.read_text()).get("mtime") != mtime:
        step = {"step": checkpoint_step(checkpoint), "checkpoint": checkpoint.name}
        write_file(record, json.dumps({**step, "mtime": mtime}) + "\n")


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
        _mark_evaluated(out, name, checkpoint)
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


# -------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunPlan:
    """A run as the sweep handles it: what to train and evaluate, and where.

    Attributes:
        spec: the run as given on the command line.
        config: its config file.
        overrides: settings after ``--config`` (overlays, data, budget, seed, --set).
        out: the sweep's output folder.
        budget: ``full``, ``tiny`` or a number of steps.
        wandb_group: also log to W&B in this group.
        error: why the run cannot start (its config does not parse), or None.
        demo: (root, settings) of the synthetic demo set the run reads, or None.
    """

    spec: RunSpec
    config: Path
    overrides: tuple[str, ...]
    out: Path
    budget: str
    wandb_group: str | None = None
    error: str | None = None
    demo: tuple[str, tuple[tuple[str, int], ...]] | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def folder(self) -> Path:
        return self.out / "runs" / self.label

    @property
    def steps(self) -> int | None:
        return budget_steps(self.budget)


def plan_runs(
    specs: Sequence[RunSpec], args, out: Path, *, write: bool = True, cell: Cell | None = None
) -> list[RunPlan]:  # fmt: skip
    """One `RunPlan` per run of `cell` (its folder: `out`); each config is parsed here
    with all its overrides, so that one that does not parse is a failed run (the others
    go on).

    The overrides, later ones winning: ``--overlay``, the cell's overlay files, the data
    and budget, the seed, ``--set``, the cell's settings. A cell's overlay or setting
    under ``model.net.init_args`` that the config's net builder does not take is left out
    for that config (as `overlay_for` does), and said so.
    """
    from aspp_seg.cli.config import read_config

    cell = cell or Cell()
    extra = [f"--{item}" for item in args.set]
    level_budget = cell.budget or args.budget
    data = data_overrides(args.data, out, level_budget, check=not args.collect)  # one demo set
    files = [*args.overlay, *(lv.overlay for lv in cell.levels if lv.overlay is not None)]
    settings = [lv.setting for lv in cell.levels if lv.setting is not None]
    plans = []
    for spec in specs:
        config = config_path(spec.config)
        budget = str(spec.steps) if spec.steps else level_budget
        demo, error = None, None
        try:
            parameters = _net_parameters(config)
            overlays = [overlay_for(Path(o), parameters, spec.label, out, write=write)
                        for o in files]  # fmt: skip
            taken = [(k, v) for k, v in settings if _net_key(k) in (None, *parameters)]
            if write and len(taken) < len(settings):
                left = ", ".join(k for k, v in settings if (k, v) not in taken)
                print(f"[table1] {spec.label}: its net takes no {left}; left out", flush=True)
            overrides = (
                *(arg for o in overlays for arg in ("--config", str(o))),
                *data,
                *budget_overrides(budget, parameters),
                *(["--seed_everything", str(spec.seed)] if spec.seed is not None else []),
                *extra,
                *(f"--{key}={value}" for key, value in taken),
            )  # fmt: skip
            demo = _demo_set(read_config(["--config", str(config), *overrides]).data)
        except ConfigError as failed:
            overrides, error = (), str(failed)
        plans.append(RunPlan(spec, config, tuple(overrides), out, budget, args.wandb_group,
                             error, demo))  # fmt: skip
    return plans


def _net_key(key: str) -> str | None:
    """``model.net.init_args.aspp.init_args.rates`` -> ``aspp``; None for other keys."""
    prefix = "model.net.init_args."
    return key.removeprefix(prefix).split(".")[0] if key.startswith(prefix) else None


def _demo_set(data) -> tuple[str, tuple[tuple[str, int], ...]] | None:
    """(root, generator settings) of a parsed ``data`` section that is the demo set."""
    if not str(data.class_path).endswith("DemoDataModule"):
        return None
    keys = ("num_train", "num_val", "height", "width", "seed")
    settings = tuple((k, data.init_args[k]) for k in keys if data.init_args.get(k) is not None)
    return str(Path(data.init_args.root).resolve()), settings


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


def _trained(plan: RunPlan, checkpoint: Path) -> dict | None:
    """The run's finished record: ``finished.json``, or for a run trained to its step
    budget before that marker existed (an earlier version of this runner), its step."""
    record = fit_record(plan)
    if record is None and plan.steps is not None:
        step = checkpoint_step(checkpoint)
        record = {"steps": step} if step >= plan.steps else None
    return record


def run_state(plan: RunPlan, *, adopt: bool = True) -> RunState:
    """The run's state from its folder. A run trained to its budget before the marker
    existed (an earlier version of this runner) is marked finished here (`adopt`)."""
    from experiments import sweep

    if plan.error:
        return RunState("failed", plan.error)
    holder = sweep.running(plan.folder)
    if holder is not None:
        return RunState("running", holder)
    found = _last_state(plan.out, plan.label)
    kept = kept_scores(plan) if found is None else None
    if kept is not None:
        return RunState("finished", f"step {kept['steps']} (scores kept, no checkpoint)")
    record = _trained(plan, Path(found[0])) if found is not None else None
    if found is not None and record is None:
        return RunState("resume", f"from step {checkpoint_step(Path(found[0]))}")
    if record is not None and adopt and fit_record(plan) is None:
        _mark_finished(plan, record["steps"])
    if record is None:
        if _abandoned(plan.folder / "fit"):
            return RunState("new", "(its attempt left no checkpoint: set aside, started anew)")
        return RunState("new")
    checkpoint = last_checkpoint(plan.out, plan.label)
    if evaluated(plan.out, plan.label, checkpoint):
        if adopt:
            _mark_evaluated(plan.out, plan.label, checkpoint)
        return RunState("finished", f"step {record['steps']}")
    return RunState("evaluate", f"trained to step {record['steps']}")


def collect(plan: RunPlan, *, evaluate_missing: bool = False) -> dict:
    """A run's row of the tables, from its folder.

    Returns:
        ``{"config", "group", "seed", "budget", "state", "reason", "steps", "wall_s",
        "train", "val", "per_image"}``; ``state`` is ``finished``, ``unfinished`` (its
        last checkpoint, evaluated by ``--collect``), ``failed``, ``running`` or ``not
        run``; the scores are present for the first two.
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
        return {**result, **_read_scores(folder), "state": "finished", "steps": kept["steps"],
                "per_image": folder / PER_IMAGE}  # fmt: skip
    done = checkpoint is not None and evaluated(plan.out, plan.label, checkpoint)
    if checkpoint is not None and (done or evaluate_missing):
        scores = evaluate(plan.label, plan.config, list(plan.overrides), plan.out, checkpoint)
        record = _trained(plan, checkpoint)
        steps = record["steps"] if record else checkpoint_step(checkpoint)
        per_image = plan.folder / "eval" / PER_IMAGE
        return {**result, **scores, "state": "finished" if record else "unfinished",
                "steps": steps, "per_image": per_image}  # fmt: skip
    holder = sweep.running(plan.folder)
    if holder is not None:
        return {**result, "state": "running", "reason": holder}
    reason = sweep.failure(plan.folder)
    if reason is not None:
        return {**result, "state": "failed", "reason": reason}
    return {**result, "state": "unfinished" if checkpoint else "not run"}


# -------------------------------------------------------------------------- main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m experiments.table1",
        description="Train and evaluate configs over seeds (one submitit job per run: local "
        "processes or SLURM), then write the study's Tables 1 and 2 with each variant's "
        "difference to the reference and whether it is beyond noise.",
    )
    parser.add_argument("--configs", nargs="+", type=str, required=True,
                        help="config names in configs/ (dl1 dl2 dl3 dl4 dl1_150ep segnet) "
                        "or YAML paths, each optionally NAME@seed=S and/or @steps=N")  # fmt: skip
    parser.add_argument("--seeds", nargs="*", type=int, default=[],
                        help="run every config once per seed (rows NAME_seedS)")  # fmt: skip
    parser.add_argument("--reference", type=str | None, default=None,
                        help="the config every other is compared with (default: the first "
                        "of --configs, DL-1 in the study)")  # fmt: skip
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
    # The switches take `--collect` or `--collect true|false`, alike for each of them.
    parser.add_argument("--collect", type=bool, nargs="?", const=True, default=False,
                        help="do not train: evaluate / read the runs in --out")  # fmt: skip
    parser.add_argument("--dry-run", type=bool, nargs="?", const=True, default=False,
                        help="print each run's state and command and the engine's settings "
                        "(the sbatch file with --cluster slurm); submit nothing")  # fmt: skip
    parser.add_argument("--grid", nargs="*", type=str, default=[],
                        help="sweep axes, each its own folder level <out>/<axis>=<level>/ "
                        "(an ordinary --out folder); several axes: their product. "
                        "KEY=V1,V2 (a setting, e.g. data.init_args.image_size=[176,240],"
                        "[360,480]), NAME=L1:FILE,L2:FILE (an overlay file per level, "
                        "L1: for none) or budget=N1,N2")  # fmt: skip
    parser.add_argument("--wandb_group", type=str | None, default=None,
                        help="also log every run to W&B (offline) in this group")  # fmt: skip
    parser.add_argument("--set", nargs="*", type=str, default=[],
                        help="extra settings for every run, KEY=VALUE as on the aspp-seg "
                        "command line, e.g. model.net.init_args.pretrained=false")  # fmt: skip
    parser.add_argument("--quiet", type=bool, default=True,
                        help="kept for older command lines: each run's output always goes "
                        "to its fit/fit.log")  # fmt: skip
    engine = parser.add_argument_group("where the jobs run (submitit)")
    engine.add_argument("--cluster", type=str, default="local",
                        help="'local' (processes on this machine) or 'slurm' (a job "
                        "array)")  # fmt: skip
    engine.add_argument("--jobs", type=int | None, default=None,
                        help="at most this many runs at once (default: local 1, SLURM "
                        "all)")  # fmt: skip
    engine.add_argument("--threads", type=int | None, default=None,
                        help="CPU threads per job (default: local, this machine's cores "
                        "split between --jobs; SLURM, the cluster's cpus-per-task)")  # fmt: skip
    engine.add_argument("--gpus_per_job", type=int | None, default=None,
                        help="GPUs per job (default: local, this machine's GPUs split "
                        "between --jobs; SLURM, 0)")  # fmt: skip
    engine.add_argument("--time_min", type=int | None, default=None,
                        help="a job's time limit in minutes (SLURM requeues a job that "
                        "reaches it; it resumes from its last checkpoint)")  # fmt: skip
    engine.add_argument("--partition", type=str | None, default=None, help="SLURM partition")
    engine.add_argument("--slurm", nargs="*", type=str, default=[],
                        help="more sbatch options, KEY=VALUE (account=abc constraint=a100 "
                        "mem=64G ...): submitit's parameter where it has one, else "
                        "#SBATCH --KEY=VALUE")  # fmt: skip
    return parser


def _key_values(items: Sequence[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def make_engine(args, out: Path):
    """The `experiments.sweep.Engine` of the command line, with this machine's share of
    threads and GPUs for local jobs."""
    from experiments import sweep

    jobs, threads, gpus = args.jobs, args.threads, args.gpus_per_job
    if args.cluster == "local":
        jobs = jobs or 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        threads = threads or max(1, (cores or os.cpu_count() or 1) // jobs)
        count = sweep.gpu_count()
        if gpus is None:
            gpus = max(1, count // jobs) if count else 0
        elif gpus > count:
            raise ConfigError(f"--gpus_per_job {gpus}: this machine has {count} GPU(s)")
    # one submitit folder per call: job ids (local: process ids) are unique within it
    folder = out / "submitit" / time.strftime("%Y%m%d-%H%M%S")
    return sweep.Engine(cluster=args.cluster, folder=folder, jobs=jobs,
                        threads=threads, gpus_per_job=gpus or 0, time_min=args.time_min,
                        partition=args.partition,
                        slurm=_key_values(args.slurm, "--slurm"))  # fmt: skip


class _Log:
    """Prints a line and appends it, time-stamped, to ``<out>/sweep.log``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        print(f"[table1] {message}", flush=True)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run(argv: Sequence[str]) -> tuple[Path, Path] | None:
    """The command; returns the two tables' paths (None for ``--dry-run``): ``table1.md``
    and ``table2.md``, or with ``--grid`` ``table_levels.md`` and ``table_levels.json``.

    Raises:
        RunFailed: a run failed (after the tables, which show its reason, are written).
    """
    args = build_parser().parse_args(list(argv))
    out = Path(args.out).resolve()
    _key_values(args.set, "--set")
    for overlay in args.overlay:
        if not Path(overlay).is_file():
            raise ConfigError(f"--overlay {overlay}: no such file")
    cells = grid_cells(args.grid)
    specs = expand_runs(args.configs, args.seeds)
    groups = {group_name(s) for s in specs}
    reference = args.reference or group_name(specs[0])
    if reference not in groups:
        raise ConfigError(f"--reference {reference}: not one of {', '.join(sorted(groups))}")
    for spec in specs:  # what can be checked without a run stops the command, before
        config_path(spec.config)  # anything is written under --out
    budget_overrides(args.budget, set())
    data_overrides(args.data, out, args.budget, check=not args.collect)  # --collect: records
    engine = make_engine(args, out)
    if not (args.dry_run or args.collect):
        engine.check_reachable()
    if args.dry_run:
        return _sweep(args, out, specs, reference, engine, cells)
    # one lock for the grid at --out, and each level's own: a level folder is an ordinary
    # --out folder, which a plain command may be working in
    with contextlib.ExitStack() as stack:
        for folder in dict.fromkeys([out, *(cell.out(out) for cell in cells)]):
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(holding(folder))
        return _sweep(args, out, specs, reference, engine, cells)


def recorded_data(out: Path) -> str | None:
    """The ``--data`` that `out`'s ``results.json`` names (None: none or no file), for a
    ``--collect`` without ``--data``: the tables keep saying what the runs read."""
    try:
        return json.loads((out / "results.json").read_text())["meta"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sweep(args, out: Path, specs: Sequence[RunSpec], reference: str, engine,
           cells: Sequence[Cell]):  # fmt: skip
    """`run` from its plans on (under the locks of `out` unless ``--dry-run``)."""
    log = _Log(None if args.dry_run else out / "sweep.log")
    plans = [plan for cell in cells for plan in plan_runs(
        specs, args, cell.out(out), write=not args.dry_run, cell=cell)]  # fmt: skip
    interrupted = []
    if not args.collect:
        states = [run_state(p, adopt=not args.dry_run) for p in plans]
        names = [job_label(p, out) for p in plans]
        width = max(len(name) for name in names)
        grid = f" ({len(cells)} cells of --grid)" if len(cells) > 1 else ""
        log(f"{len(plans)} runs in {out}{grid}; jobs: {engine.describe()}")
        for name, state in zip(names, states, strict=True):
            log(f"  {name:<{width}}  {state.what} {state.detail}".rstrip())
        todo = [p for p, state in zip(plans, states, strict=True) if state.submit]
        if args.dry_run:
            _print_dry_run(todo, engine, out)
            return None
        interrupted = _submit(todo, engine, log, out)
    elif args.dry_run:
        print("[table1] --collect: nothing would be submitted")
        return None
    from experiments import tables

    levels, failed, count = [], [], 0
    for cell in cells:
        folder = cell.out(out)
        mine = [p for p in plans if p.out == folder]
        if args.collect:  # the records decide: a run never started has no row
            absent = [p.label for p in mine if not p.folder.exists()]
            mine = [p for p in mine if p.folder.exists()]
            if absent:
                print(f"[table1] {cell.name or out}: no records of {', '.join(absent)}; "
                      "left out of the tables", flush=True)  # fmt: skip
        results = {p.label: collect(p, evaluate_missing=args.collect) for p in mine}
        data = args.data if args.data is not None or not args.collect else recorded_data(folder)
        t1, t2 = tables.write_tables(results, folder, data=data, budget=cell.budget or args.budget,
                                     reference=reference)  # fmt: skip
        levels.append((cell.name, results))
        count += len(results)
        failed += [f"{job_label(p, out)} ({results[p.label]['reason']})" for p in mine
                   if results[p.label]["state"] == "failed"]  # fmt: skip
    if len(cells) > 1:
        t1, t2 = tables.write_levels(levels, out, reference=reference, axes=args.grid)
        print(f"\n{t1.read_text()}\nwritten: {t1}, {t2} and each level's "
              "table1.md, table2.md, results.json", flush=True)  # fmt: skip
    else:
        print(f"\n{t1.read_text()}\n{t2.read_text()}\nwritten: {t1}, {t2}", flush=True)
    if failed:
        raise RunFailed(f"{len(failed)} of {count} runs failed (the tables say so): "
                        + "; ".join(failed))  # fmt: skip
    if interrupted:  # preempted or stopped: not a finished sweep
        raise Interrupted(f"{len(interrupted)} of {count} runs were interrupted "
                          f"({', '.join(interrupted)}); the same command resumes them from "
                          "their last.ckpt")  # fmt: skip
    return t1, t2


def job_label(plan: RunPlan, out: Path) -> str:
    """The run's name in the sweep's log: its label, after its cell's folder in a grid
    (``image_size=360x480/dl1_seed0``)."""
    return str(plan.out.relative_to(out) / plan.label)


def _print_dry_run(todo: Sequence[RunPlan], engine, out: Path) -> None:
    from experiments import sweep

    print(f"[table1] --dry-run: {len(todo)} job(s) would be submitted ({engine.describe()}):")
    for plan in todo:
        command = fit_command(plan.label, plan.config, plan.overrides, plan.out,
                              plan.wandb_group)  # fmt: skip
        print(f"  {job_label(plan, out)}: {shlex.join(['aspp-seg', *command[3:]])}")
    if engine.cluster == "slurm" and todo:
        print(f"[table1] the sbatch file submitit would write ({engine.folder}):")
        print(sweep.sbatch_text(engine, len(todo)))


def _submit(todo: Sequence[RunPlan], engine, log, out: Path) -> list[str]:
    """Runs the jobs of `todo` (every cell's: one SLURM array); returns the labels of
    those a signal interrupted."""
    from experiments import sweep

    if not todo:
        return []
    prepare_data(todo)
    # the jobs unpickle experiments.* wherever they start (cwd may be elsewhere)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    jobs = [sweep.Job(job_label(p, out), p.folder, functools.partial(run_one, p),
                      engine.threads) for p in todo]  # fmt: skip
    outcomes = sweep.run_jobs(jobs, engine, log)
    failed = [o.label for o in outcomes if o.reason is not None and not o.interrupted]
    stopped = [o.label for o in outcomes if o.interrupted]
    done = len(outcomes) - len(failed) - len(stopped)
    log(f"{done} of {len(outcomes)} jobs finished"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + (f"; interrupted: {', '.join(stopped)}" if stopped else ""))  # fmt: skip
    return stopped


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        print("table1: error: interrupted; run the same command again to go on", file=sys.stderr)
        sys.exit(130)
    except UserError as error:
        print(f"table1: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
