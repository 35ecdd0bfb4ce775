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
job failed; then ``table1.md``, ``table2.md``, ``table3.md`` (val Boundary IoU and the
thin classes, where a run has boundary records), ``results.json``, the figures
(``val_miou``, ``class_iou``, ``learning_curves``, each ``.png`` and ``.svg``:
`experiments.figures`) and ``sweep.log``. The run
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
jobs: one SLURM array), ``levels.png`` / ``levels.svg`` and ``table_levels.md`` /
``table_levels.json``: each config's val
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

This file is the command; the rest lives beside it: `experiments.plans` (the run syntax,
the grid, each run's overrides), `experiments.runner` (a run's training, evaluation and
folder), `experiments.sweep` (the jobs, on submitit) and `experiments.tables` (the tables).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from jsonargparse import ArgumentParser

from aspp_seg.errors import ConfigError, Interrupted, RunFailed, UserError
from experiments.plans import (
    REPO,
    Cell,
    RunPlan,
    RunSpec,
    budget_overrides,
    config_path,
    data_overrides,
    expand_runs,
    grid_cells,
    group_name,
    plan_runs,
)
from experiments.runner import collect, fit_command, prepare_data, run_one, run_state

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
        states = [run_state(p) for p in plans]
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
    from experiments import figures, tables

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
        figures.write_figures(results, folder)
        levels.append((cell.name, results))
        count += len(results)
        failed += [f"{job_label(p, out)} ({results[p.label]['reason']})" for p in mine
                   if results[p.label]["state"] == "failed"]  # fmt: skip
    if len(cells) > 1:
        t1, t2 = tables.write_levels(levels, out, reference=reference, axes=args.grid)
        figures.write_level_figure(levels, out)
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
