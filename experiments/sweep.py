"""One job per run through submitit: local processes or SLURM, resumable from the run folders.

`experiments.table1` describes each run (config, seed, budget) as a `Job`: a picklable
callable whose work trains and evaluates that run in its own folder. `run_jobs` hands
the jobs to submitit's `LocalExecutor` (here: at most ``jobs`` processes at once, each
with its share of the CPU threads and GPUs) or to SLURM through `submitit.AutoExecutor`
(one job array; partition, GPUs, time limit and any other sbatch option), waits, and
returns one `Outcome` per job. submitit runs the processes, writes their logs and
requeues a SLURM job cut by preemption or its time limit (`Job.checkpoint`); nothing
here schedules by hand beyond keeping ``jobs`` local processes busy.

A stopped job is interrupted, never finished nor failed for good (docs/scaling.md,
"Signals"): on submitit's preemption signal (SIGUSR2 before a SLURM time limit or at
preemption) `Job.checkpoint` stops the training child at its next step, which writes
``last.ckpt`` for it, and submitit requeues the job, which resumes from there. On SIGTERM
the job passes it on to the child and waits for it; a child that a signal stopped
(exit 143, 138, 130) makes the job's `Outcome` interrupted, and the next sweep resumes the
run. The children are started by `run_child`, which keeps submitit's signal from them (it
would kill them where SLURM signals every process of the job).

State lives in the run folders only. While a job runs, ``<run>/job.json`` names its
host and process and a heartbeat, so that a second sweep on the same folder leaves the
run alone (`running`); a job that fails writes its one-line reason to
``<run>/failed.txt`` (removed when the run later finishes). What "finished" means for a
run is the work's business (`experiments.runner`: a marker written after the training
reached its budget, then the evaluation files).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from aspp_seg.errors import ConfigError, Interrupted, Terminated, UserError

LOCK = "job.json"
FAILED = "failed.txt"
BEAT_S = 30  # heartbeat of job.json; another host counts a run as running for 3 beats
NO_TIME_LIMIT_MIN = 60 * 24 * 365  # submitit's local default is 2 minutes
STOP_S = 60.0  # how long `Job.checkpoint` waits for a child to write last.ckpt (SLURM
# sends submitit's signal 90 s before the end; a training step takes seconds at most)


@dataclass(frozen=True)
class Outcome:
    """How one job ended: `reason` is None when its work finished; `interrupted`: a signal
    stopped it (the next sweep resumes the run; nothing failed)."""

    label: str
    reason: str | None = None
    interrupted: bool = False


@dataclass(frozen=True)
class Job(submitit.helpers.Checkpointable):
    """One run, as submitit runs it: ``work()`` in the run's folder, under its lock.

    Attributes:
        label: the run's name (``dl1_seed0``).
        folder: the run folder, ``<out>/runs/<label>``.
        work: a picklable callable (a `functools.partial` of a module-level function)
            that trains and evaluates the run; it raises `UserError` with a one-line
            reason when the run fails.
        threads: OMP / MKL / torch threads of the job and its children (None: as set).
    """

    label: str
    folder: Path
    work: Callable[[], object]
    threads: int | None = None

    def __call__(self) -> Outcome:
        if self.threads:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[name] = str(self.threads)
        # One submitit task per run: Lightning in the training child starts its own DDP
        # processes over the job's GPUs. It would take SLURM_NTASKS for srun having
        # started one process per GPU (and refuse devices > 1), so the child does not see it.
        for name in ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE"):
            os.environ.pop(name, None)
        holder = running(self.folder)
        if holder is not None:
            return Outcome(self.label, f"already running: {holder}")
        # SIGTERM (preemption, a cancelled job, a controller stopping its tasks) goes on to
        # the training child, which stops at its next step with last.ckpt; without a
        # child it is an exception at once
        previous = signal.signal(signal.SIGTERM, _terminate)
        failed = self.folder / FAILED
        try:
            with _Lock(self.folder):
                if self.threads and "torch" in sys.modules:  # else torch reads the variables
                    sys.modules["torch"].set_num_threads(self.threads)
                self.work()
        except Interrupted as error:  # a signal: resumed later, not failed
            return Outcome(self.label, " ".join(str(error).split()), interrupted=True)
        except UserError as error:
            return Outcome(self.label, _record(failed, str(error)))
        except Exception as error:  # a bug, not a setting: its traceback goes to the log
            traceback.print_exc()
            return Outcome(self.label, _record(failed, f"{type(error).__name__}: {error}"))
        finally:
            signal.signal(signal.SIGTERM, previous)
        failed.unlink(missing_ok=True)
        return Outcome(self.label)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """submitit's requeue hook (its preemption / time-limit signal): stops the training
        child at its next step (it writes last.ckpt for that step), then the same job
        again, which resumes from there."""
        stop_children(STOP_S)
        return super().checkpoint(*args, **kwargs)


# ------------------------------------------------------------- the training child

_CHILDREN: set[subprocess.Popen] = set()  # started by run_child, not yet ended


def run_child(command: Sequence[str], **popen_kwargs) -> int:
    """Runs `command` (a training child) to its end and returns its exit status.

    submitit's preemption signal is blocked in the child: where SLURM sends it to every
    process of the job, it would kill the child before `Job.checkpoint` stops it at a
    step. SIGTERM to the job reaches the child through `_terminate`; an exception in the
    job (Ctrl-C) kills it, so that it never outlives the job.
    """
    blocked = {submitit.JobEnvironment._usr_sig()}
    process = None
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # inherited through exec
        try:
            process = subprocess.Popen(command, **popen_kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _CHILDREN.add(process)
        return process.wait()
    except BaseException:
        if process is not None:
            process.kill()
            process.wait()
        raise
    finally:
        _CHILDREN.discard(process)


def stop_children(timeout_s: float) -> None:
    """Sends SIGTERM to the running children and waits up to `timeout_s` for them to end
    (they stop at their next step with last.ckpt). Safe in a signal handler: it waits
    without reaping, so `run_child` still reads each exit status."""
    children = list(_CHILDREN)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_running(child.pid) for child in children):
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:  # WNOWAIT: an ended child stays waitable for Popen.wait
        ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped
        return False
    return ended is None


def _terminate(signum, frame) -> None:
    if _CHILDREN:  # the child stops at its next step, writes last.ckpt and exits 143
        for child in list(_CHILDREN):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)
        return
    raise Terminated(f"the job was stopped by {signal.Signals(signum).name}", signum)


def stopped_by(code: int) -> signal.Signals | None:
    """The signal that stopped a child with exit status `code` (``aspp-seg``'s 143, 138,
    130, or a negative status of a process the signal killed) when it is one that
    interrupts a run (SIGTERM, SIGUSR1, SIGINT), else None."""
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        if code in (128 + signum, -signum):
            return signum
    return None


def _record(path: Path, reason: str) -> str:
    reason = " ".join(reason.split())  # one line
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason + "\n")
    return reason


# ------------------------------------------------------------------- the run's lock


class _Lock:
    """``<run>/job.json`` while the job runs: host, pid and a heartbeat every `BEAT_S`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.stop = threading.Event()
        self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                     "job": os.environ.get("SLURM_JOB_ID") or os.environ.get(
                         "SUBMITIT_LOCAL_JOB_ID", str(os.getpid())),
                     "started": time.time()}  # fmt: skip

    def _beat(self) -> None:
        self.path.write_text(json.dumps({**self.info, "beat": time.time()}))

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._beat()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(BEAT_S):
            self._beat()

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.path.unlink(missing_ok=True)


def running(folder: Path) -> str | None:
    """Who runs the run in `folder` now (``job 123, pid 456 on host``), or None.

    On this host the process must be alive; on another (a shared file system) the
    heartbeat must be younger than three beats. A lock left by a killed job is stale.
    """
    try:
        info = json.loads((folder / LOCK).read_text())
        host, pid = str(info["host"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname():
        alive = _alive(pid)
    else:
        alive = time.time() - float(info.get("beat", 0)) < 3 * BEAT_S
    return f"job {info.get('job')}, pid {pid} on {host}" if alive else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def failure(folder: Path) -> str | None:
    """The reason recorded by the run's last failed job, or None."""
    path = folder / FAILED
    return path.read_text().strip() if path.is_file() else None


# ------------------------------------------------------------------------ engines


@dataclass(frozen=True)
class Engine:
    """Where and how the jobs run.

    Attributes:
        cluster: ``local`` (submitit's LocalExecutor: processes on this machine) or
            ``slurm`` (submitit's AutoExecutor: one job array).
        folder: submitit's folder (pickled jobs, each job's stdout / stderr).
        jobs: at most this many jobs at once (None: local 1, SLURM all).
        threads: CPU threads per job (OMP / MKL / torch; SLURM: ``cpus_per_task``).
        gpus_per_job: GPUs per job (local: this machine's GPUs shared out, round robin).
        time_min: a job's time limit in minutes (None: none locally, SLURM's default).
        partition: SLURM partition.
        slurm: more sbatch options, ``{"account": "abc", "constraint": "a100"}``:
            submitit's SLURM parameters where it has one, else written as
            ``#SBATCH --key=value``.
        poll_s: how often a finished job is looked for.
    """

    cluster: str = "local"
    folder: Path = Path("submitit")
    jobs: int | None = None
    threads: int | None = None
    gpus_per_job: int = 0
    time_min: int | None = None
    partition: str | None = None
    slurm: dict[str, str] = field(default_factory=dict)
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.cluster not in ("local", "slurm"):
            raise ConfigError(f"--cluster {self.cluster!r}: choose local or slurm")
        for name in ("jobs", "threads", "time_min"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} {value}: must be at least 1")
        if self.gpus_per_job < 0:
            raise ConfigError(f"--gpus_per_job {self.gpus_per_job}: must be >= 0")
        if self.cluster == "local" and (self.partition or self.slurm):
            raise ConfigError("--partition and --slurm are SLURM options: add --cluster slurm")

    def check_reachable(self) -> None:
        """Stops a command before it writes anything when its cluster is not here (the
        test submitit's SLURM executor makes: ``srun`` on the PATH)."""
        if self.cluster == "slurm" and submitit.SlurmExecutor.affinity() < 1:
            raise ConfigError(
                "--cluster slurm: no srun here; run the command on the cluster's login node "
                "(--dry-run prints what it submits)"
            )

    def describe(self) -> str:
        if self.cluster == "slurm":
            at_once = f"at most {self.jobs} at once" if self.jobs else "all at once"
            return f"SLURM job array through submitit ({at_once})"
        gpus = f", {self.gpus_per_job} GPU(s) each" if self.gpus_per_job else ""
        threads = f", {self.threads} thread(s) each" if self.threads else ""
        return f"local processes through submitit, {self.jobs or 1} at once{threads}{gpus}"


def slurm_parameters(engine: Engine, count: int) -> dict:
    """submitit's SLURM parameters (``_make_sbatch_string`` names) for `count` jobs."""
    known = submitit.SlurmExecutor._valid_parameters()
    params: dict = {"job_name": "aspp-seg", "ntasks_per_node": 1, "nodes": 1,
                    "array_parallelism": min(engine.jobs or count, count)}  # fmt: skip
    if engine.partition:
        params["partition"] = engine.partition
    if engine.time_min:
        params["time"] = engine.time_min
    if engine.gpus_per_job:
        params["gpus_per_node"] = engine.gpus_per_job
    if engine.threads:
        params["cpus_per_task"] = engine.threads
    extra = {}
    for key, value in engine.slurm.items():
        name = key.replace("-", "_")
        typed = int(value) if str(value).isdigit() else value
        if name in known and name != "additional_parameters":
            params[name] = typed
        else:  # an sbatch option submitit does not name: written as given
            extra[key] = typed
    if extra:
        params["additional_parameters"] = extra
    return params


def sbatch_text(engine: Engine, count: int) -> str:
    """The sbatch file submitit would write for `count` jobs (for ``--dry-run``)."""
    params = slurm_parameters(engine, count)
    command = f"{sys.executable} -u -m submitit.core._submit {engine.folder}"
    try:
        from submitit.slurm.slurm import _make_sbatch_string  # what submitit writes

        return _make_sbatch_string(command=command, folder=engine.folder, map_count=count,
                                   **params)  # fmt: skip
    except (ImportError, TypeError) as error:  # submitit changed: show the parameters
        return f"submitit SLURM parameters: {params} ({error})"


def local_gpus(engine: Engine, slot: int) -> list[int]:
    """GPUs of local slot `slot`: this machine's GPUs handed out round robin."""
    count = gpu_count()
    if not engine.gpus_per_job or not count:
        return []
    first = slot * engine.gpus_per_job
    return [(first + i) % count for i in range(engine.gpus_per_job)]


def gpu_count() -> int:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES, else torch's count)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip()])
    import torch

    return torch.cuda.device_count()


def run_jobs(jobs: Sequence[Job], engine: Engine, log: Callable[[str], None]) -> list[Outcome]:
    """Runs `jobs` on `engine`, logging each start and end; one `Outcome` per job.

    A job that fails does not stop the others. Ctrl-C stops local jobs (their runs
    resume on the next call); SLURM jobs keep running and are left to the next call.

    Raises:
        Interrupted: Ctrl-C.
    """
    if not jobs:
        return []
    engine.folder.mkdir(parents=True, exist_ok=True)
    if engine.cluster == "slurm":
        return _run_slurm(jobs, engine, log)
    return _run_local(jobs, engine, log)


def _outcome(job: Job, submitted: submitit.Job) -> Outcome:
    try:
        outcome = submitted.result()
    except submitit.core.utils.UncompletedJobError as error:  # killed, crashed
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        if isinstance(error, submitit.core.utils.FailedJobError):  # the trace's last line
            said = lines[-1]
        else:  # died (killed, out of memory): submitit's "has not produced any output (...)"
            said = next((line for line in lines if "has not produced" in line), lines[0])
        reason = (f"the job's process ended without a result ({said[:300]}); its log: "
                  f"{submitted.paths.stderr}")  # fmt: skip
        return Outcome(job.label, _record(job.folder / FAILED, reason))
    if not isinstance(outcome, Outcome) or outcome.label != job.label:
        reason = f"the job returned {outcome!r}, not its outcome; its log: {submitted.paths.stdout}"
        return Outcome(job.label, _record(job.folder / FAILED, reason))
    return outcome


def _ended(job: Job, outcome: Outcome, started: float, log: Callable[[str], None]) -> None:
    took = f"{(time.time() - started) / 60:.1f} min"
    if outcome.reason is None:
        log(f"{job.label}: finished ({took})")
    elif outcome.interrupted:
        log(f"{job.label}: interrupted ({took}): {outcome.reason}; the same command resumes it")
    else:
        log(f"{job.label}: FAILED ({took}): {outcome.reason}")


def _run_local(jobs: Sequence[Job], engine: Engine, log: Callable[[str], None]) -> list[Outcome]:
    executor = submitit.LocalExecutor(folder=engine.folder)
    pending, outcomes = list(jobs), {}
    running_: dict[int, tuple[Job, submitit.Job, float]] = {}
    free = list(range(engine.jobs or 1))
    try:
        while pending or running_:
            while pending and free:
                slot, job = free.pop(0), pending.pop(0)
                gpus = local_gpus(engine, slot)
                executor.update_parameters(timeout_min=engine.time_min or NO_TIME_LIMIT_MIN,
                                           gpus_per_node=len(gpus), visible_gpus=gpus)  # fmt: skip
                submitted = executor.submit(job)
                on = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
                log(f"{job.label}: started (local job {submitted.job_id}{on})")
                running_[slot] = (job, submitted, time.time())
            time.sleep(engine.poll_s)
            for slot, (job, submitted, started) in list(running_.items()):
                if submitted.done():
                    outcomes[job.label] = _outcome(job, submitted)
                    _ended(job, outcomes[job.label], started, log)
                    del running_[slot]
                    free.append(slot)
    except KeyboardInterrupt:
        for _, submitted, _ in running_.values():
            submitted.cancel(check=False)
        labels = ", ".join(job.label for job, _, _ in running_.values()) or "none"
        raise Interrupted(f"stopped; in flight: {labels}. Run the same command again to "
                          "resume them from their last checkpoints") from None  # fmt: skip
    return [outcomes[job.label] for job in jobs]


def slurm_executor(engine: Engine, count: int) -> submitit.AutoExecutor:
    """submitit's SLURM executor with `slurm_parameters` (needs ``srun`` on this machine)."""
    executor = submitit.AutoExecutor(folder=engine.folder, cluster="slurm")
    params = slurm_parameters(engine, count)
    executor.update_parameters(**{f"slurm_{k}": v for k, v in params.items()})
    return executor


def _run_slurm(jobs: Sequence[Job], engine: Engine, log: Callable[[str], None]) -> list[Outcome]:
    try:
        executor = slurm_executor(engine, len(jobs))
    except RuntimeError as error:  # no srun: not on a SLURM cluster
        raise ConfigError(f"--cluster slurm: {error}") from None
    with executor.batch():
        submitted = [executor.submit(job) for job in jobs]
    for job, sub in zip(jobs, submitted, strict=True):
        log(f"{job.label}: submitted (SLURM job {sub.job_id})")
    waiting = dict(zip((job.label for job in jobs), zip(jobs, submitted, strict=True), strict=True))
    outcomes, started = {}, time.time()
    try:
        while waiting:
            time.sleep(max(engine.poll_s, 30.0))
            for label, (job, sub) in list(waiting.items()):
                if sub.done():
                    outcomes[label] = _outcome(job, sub)
                    _ended(job, outcomes[label], started, log)
                    del waiting[label]
    except KeyboardInterrupt:
        ids = ", ".join(f"{label} ({sub.job_id})" for label, (_, sub) in waiting.items())
        raise Interrupted(f"stopped waiting; the SLURM jobs keep running: {ids}. Run the same "
                          "command again when they end to tabulate them") from None  # fmt: skip
    return [outcomes[job.label] for job in jobs]
