"""Signals during a run: preemption is an interruption, never a success.

SIGTERM (preemption, ``kill``, ``timeout``) and SIGUSR1 (outside SLURM's auto-requeue) end
``fit`` at the next step with ``last.ckpt`` written for that step, one line and exit
status 143 / 138; ``validate``, ``test`` and ``predict`` end with one line and 143,
leaving their folders as they were. SIGINT (Ctrl-C) is 130 with one line; ``kill -9``
loses the steps after the last checkpoint, and ``--ckpt_path last`` resumes with every
step logged once. Under SLURM with auto-requeue, Lightning keeps SIGUSR1.

Two tables: signals sent by the run itself at a known step (in this process, through
`check`), and signals sent from outside to a real ``aspp-seg fit`` process.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import submitit
import torch
from harness import Case, check, last_line
from lightning.pytorch import Callback, Trainer

from aspp_seg.training.callbacks import Preemption

STEPS = ("--trainer.max_epochs", "10", "--trainer.limit_train_batches", "1.0",
         "--trainer.limit_val_batches", "0")  # fmt: skip
"""Over the tiny config's 2 steps: 4 steps an epoch (16 frames, batch 4), no validation."""


class SendSignal(Callback):
    """Sends `signum` to this process once, when `step` training steps are done (``fit``)
    or after the first batch (``validate``, ``test``, ``predict``): a signal at a known
    moment of the run."""

    def __init__(self, signum: int = signal.SIGTERM, step: int = 3) -> None:
        self.signum, self.step, self.sent = signum, step, False

    def _send(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._send()

    def _evaluation_batch_end(self, trainer, *args) -> None:
        if trainer.state.fn != "fit":
            self._send()

    on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _evaluation_batch_end


def _send(signum: int, step: int = 3) -> tuple[str, ...]:
    callback = {
        "class_path": f"{__name__}.SendSignal",
        "init_args": {"signum": signum, "step": step},
    }
    text = json.dumps(callback).replace("{", "{{").replace("}", "}}")  # `check` str.formats it
    return ("--trainer.callbacks+", text)


def _step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


def _evaluate(command: str, signum: int) -> tuple[str, ...]:
    """`command` on the finished run's last.ckpt, with batches after the first (a command
    whose last batch is running when the signal comes finishes, as it would a moment
    later), `signum` sent after the first."""
    return (command, "--config", "{config}", "--ckpt_path", "{ckpt}",
            "--data.init_args.val_batch_size", "1", "--trainer.limit_val_batches", "4",
            "--trainer.limit_test_batches", "4", "--trainer.limit_predict_batches", "4",
            *_send(signum))  # fmt: skip


NEW_RUN = "runs/tiny/version_1/**"
TERMINATED = r"^aspp-seg: error: terminated at step 3 \({}\); \S+/runs/tiny/version_1/checkpoints/last\.ckpt holds step 3; run the same command with --ckpt_path last$"  # noqa: E501
EVALUATION = r"^aspp-seg: error: terminated during {} \(SIGTERM\); nothing was written: run the same command again$"  # noqa: E501

# (case, the run whose last.ckpt the stop writes, the step it must hold)
CASES = [
    (Case("fit SIGTERM: last.ckpt at the step, 143",
          ("fit", "--config", "{config}", *STEPS, *_send(signal.SIGTERM)),
          143, TERMINATED.format("SIGTERM"), writes=(NEW_RUN,)),
     "version_1", 3),
    (Case("fit SIGUSR1 (no SLURM): last.ckpt at the step, 138",
          ("fit", "--config", "{config}", *STEPS, *_send(signal.SIGUSR1)),
          138, TERMINATED.format("SIGUSR1"), writes=(NEW_RUN,)),
     "version_1", 3),
    (Case("fit SIGINT (Ctrl-C): 130, the newest checkpoint named",
          ("fit", "--config", "{config}", *STEPS, *_send(signal.SIGINT, step=5)),
          130, r"^aspp-seg: error: interrupted at step 5 \(epoch 1\); the newest checkpoint is "
          r"\S+/version_1/checkpoints/last\.ckpt \(step 4\): run the same command with "
          r"--ckpt_path last to resume from it$", writes=(NEW_RUN,)),
     "version_1", 4),
    (Case("validate SIGTERM: 143, its folder as it was",
          _evaluate("validate", signal.SIGTERM),
          143, EVALUATION.format("validate")), None, None),
    (Case("test SIGTERM: 143, its folder as it was",
          _evaluate("test", signal.SIGTERM),
          143, EVALUATION.format("test")), None, None),
    (Case("predict SIGUSR1: 138, its folder as it was",
          _evaluate("predict", signal.SIGUSR1),
          138, EVALUATION.format("predict").replace("SIGTERM", "SIGUSR1")), None, None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "run", "step"), CASES, ids=[str(c[0]) for c in CASES])
def test_case(case, run, step, ws, run_cli):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        check(case, ws, run_cli)
    finally:  # Lightning ignores Ctrl-C from its first one on, in this process
        signal.signal(signal.SIGINT, ctrl_c)
    # the handlers of the process are back (an in-process caller keeps its own)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    if run is not None:
        assert _step(ws.work / "runs" / "tiny" / run / "checkpoints" / "last.ckpt") == step


def test_lightnings_slurm_requeue_keeps_sigusr1(monkeypatch):
    """With SLURMEnvironment(auto_requeue=True), Lightning's handler gets SIGUSR1 (it
    writes hpc_ckpt_<n>.ckpt and requeues the job); SIGTERM stops the run as elsewhere."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for name, value in {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_ID": "7",
                        "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                        "SLURM_NODEID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    for auto_requeue in (True, False):
        trainer = Trainer(plugins=[SLURMEnvironment(auto_requeue=auto_requeue)], logger=False,
                          accelerator="cpu", devices=1, enable_progress_bar=False)  # fmt: skip
        preemption = Preemption()
        preemption.setup(trainer, None, "fit")
        trainer._signal_connector.register_signal_handlers()  # as Trainer.fit does after setup
        try:
            usr1 = signal.getsignal(signal.SIGUSR1)
            lightnings = getattr(usr1, "signal_handlers", [])
            if auto_requeue:
                assert trainer._signal_connector._slurm_sigusr_handler_fn in lightnings
            else:
                assert usr1 == preemption._handle
            term = signal.getsignal(signal.SIGTERM).signal_handlers
            assert (
                preemption._handle in term
                and trainer._signal_connector._sigterm_notifier_fn in term
            )
        finally:
            trainer._signal_connector.teardown()
            preemption.restore()
        assert {s: signal.getsignal(s) for s in before} == before


# --- a signal in the middle of writing a checkpoint ---


class _SignalledFile:
    """A file that sends `signum` to this process at its third write: a signal that
    lands inside torch.save, which turns a KeyboardInterrupt raised there into a
    RuntimeError about a damaged archive."""

    def __init__(self, file, signum: int) -> None:
        self.file, self.signum, self.writes = file, signum, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), self.signum)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


MID_WRITE = [
    (signal.SIGINT, 130, r"^aspp-seg: error: interrupted at step 4 \(epoch \d\); the newest "
     r"checkpoint is \S+/version_1/checkpoints/last\.ckpt \(step 4\): run the same command "
     r"with --ckpt_path last to resume from it$", 4),
    (signal.SIGTERM, 143, TERMINATED.replace("step 3", "step 4").format("SIGTERM"), 4),
]  # fmt: skip


@pytest.mark.parametrize(("signum", "status", "line", "step"), MID_WRITE,
                         ids=[signal.Signals(c[0]).name for c in MID_WRITE])  # fmt: skip
def test_a_signal_while_a_checkpoint_is_written(signum, status, line, step, ws, run_cli,
                                                monkeypatch):  # fmt: skip
    """The checkpoint being written is completed, then the signal stops the run at the
    step that checkpoint holds: one line, 130 for Ctrl-C and 143 for SIGTERM."""
    save, sent = torch.save, []

    def save_with_a_signal(obj, file, *args, **kwargs):
        if not sent and hasattr(file, "write"):
            sent.append(signum)
            file = _SignalledFile(file, signum)
        return save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_with_a_signal)
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        case = Case(f"{signal.Signals(signum).name} mid-write", ("fit", "--config", "{config}",
                    *STEPS), status, line, writes=(NEW_RUN,))  # fmt: skip
        check(case, ws, run_cli)
    finally:
        signal.signal(signal.SIGINT, ctrl_c)
    assert sent
    assert _step(ws.work / "runs" / "tiny" / "version_1" / "checkpoints" / "last.ckpt") == step


# --- signals from outside, to a real process ---


def _fit(config: Path, max_steps: int, workers: int = 0) -> list[str]:
    return [sys.executable, "-m", "aspp_seg.cli", "fit", "--config", str(config), *STEPS,
            "--trainer.max_steps", str(max_steps),
            "--data.init_args.num_workers", str(workers)]  # fmt: skip


def _logged_steps(run: Path) -> list[int]:
    """The steps of metrics.csv's training-loss rows, in file order."""
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def _stepped(run: Path) -> bool:
    return len(_logged_steps(run)) >= 2


def _checkpointed(run: Path) -> bool:
    return (run / "checkpoints" / "last.ckpt").is_file()


TOTAL = 8
"""Steps of the run (2 epochs); the signal comes after 2 (SIGTERM) or 4 (kill -9: the
first epoch's last.ckpt), and the same command with --ckpt_path last trains the rest."""

# (signal, when to send it, data workers, exit status, last line (\1: the step reached),
# resume: whether the same command with --ckpt_path last runs after it). SIGTERM goes to
# the whole process group, data workers included, as SLURM sends it at preemption;
# tests/training/test_resume.py resumes a killed run and compares it step for step.
OUTSIDE = [
    (signal.SIGTERM, _stepped, 2, 143,
     r"^aspp-seg: error: terminated at step (\d+) \(SIGTERM\); \S+last\.ckpt holds step \1; "
     r"run the same command with --ckpt_path last$", True),
    (signal.SIGKILL, _checkpointed, 0, -signal.SIGKILL, r"()", False),
]  # fmt: skip


def _stop(work: Path, config: Path, run: Path, signum, ready, workers, status, line,
          resume) -> None:  # fmt: skip
    """``aspp-seg fit`` in `work` (a new `run`), `signum` to its process group once
    `ready(run)`; checks its exit status, last line and last.ckpt."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(_fit(config, TOTAL, workers), cwd=work, env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while not ready(run) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, f"{signum.name}: fit ended before the signal"
        os.killpg(process.pid, signum)
        _, err = process.communicate(timeout=150)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    said = f"{signum.name}: exit {process.returncode}\n{err[-3000:]}"
    assert process.returncode == status, said
    assert "Traceback" not in err, said
    found = re.search(line, last_line(err))
    assert found, said
    saved = _step(run / "checkpoints" / "last.ckpt")
    if found.group(1):  # SIGTERM: last.ckpt holds the step reached, every step logged once
        assert saved == int(found.group(1)) >= 2, said
        assert _logged_steps(run) == list(range(saved)), said
    assert 0 < saved < TOTAL, said


def test_stopped_from_outside_then_resumed_every_step_logged_once(ws, tmp_path, run_cli):
    """A real ``aspp-seg fit`` process: SIGTERM to it and its data workers ends it at the
    next step with exit status 143, one line and last.ckpt for that step, and
    ``--ckpt_path last`` then finishes the run in the same folder, every step logged once;
    kill -9 leaves the first epoch's last.ckpt whole. The two processes run side by side
    (each waited on in a thread); the resume runs in this process."""
    lanes = []
    for (signum, *row), work in zip(OUTSIDE, (ws.work, tmp_path / "other"), strict=True):
        work.mkdir(exist_ok=True)
        config = work / "tiny.yaml"
        if work != ws.work:  # the same config, logging under this folder
            config.write_text(ws.config.read_text().replace(str(ws.work), str(work)))
        run = work / "runs" / "tiny" / ("version_1" if work == ws.work else "version_0")
        lanes.append((work, config, run, signum, *row))
    with ThreadPoolExecutor(len(lanes)) as pool:
        for done in [pool.submit(_stop, *lane) for lane in lanes]:
            done.result()

    for work, config, run, signum, _, workers, *_, resume in lanes:
        if not resume:
            continue
        command = _fit(config, TOTAL, workers)[3:]  # the same command, in this process
        resumed = run_cli(*command, "--ckpt_path", "last", cwd=work)
        assert resumed.returncode == 0, f"{signum.name}, resumed: {resumed.stderr[-3000:]}"
        assert sorted(run.parent.iterdir())[-1] == run  # the same run, not a new one
        assert _step(run / "checkpoints" / "last.ckpt") == TOTAL
        assert _logged_steps(run) == list(range(TOTAL)), f"{signum.name}: a step lost or repeated"


# --- the sweep: a job a signal stopped is interrupted, not finished, not failed ---

CHILD = """
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
blocked = next(int(line.split()[1], 16) for line in open("/proc/self/status")
               if line.startswith("SigBlk:"))
def stop(signum, frame):  # as aspp-seg fit: last.ckpt at the next step, then 128 + signal
    marker.write_text(f"{blocked} stopped")
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
marker.write_text(f"{blocked} running")
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
"""
"""A stand-in for the training child: says that it runs (with its blocked signals) and
exits like ``aspp-seg fit`` on SIGTERM, or with a given status after a given time."""


def _child(marker: Path, *more: str) -> list[str]:
    return [sys.executable, "-c", CHILD, str(marker), *more]


def _training_job(tmp_path: Path, monkeypatch, *more: str):
    """A sweep job whose work is `experiments.runner.train` with the stand-in child."""
    import functools

    from experiments import runner, sweep

    marker = tmp_path / "child.txt"
    monkeypatch.setattr(runner, "fit_command", lambda *args: _child(marker, *more))
    folder = tmp_path / "out" / "runs" / "dl1"
    work = functools.partial(runner.train, "dl1", Path("dl1.yaml"), [], tmp_path / "out",
                             wandb_group=None, quiet=True)  # fmt: skip
    return sweep.Job("dl1", folder, work), folder, marker


@pytest.mark.parametrize(
    ("status", "interrupted"),
    [(143, True), (138, True), (130, True), (-signal.SIGTERM, True), (1, False),
     (-signal.SIGKILL, False)],
)  # fmt: skip
def test_a_child_stopped_by_a_signal_is_an_interrupted_run(status, interrupted, tmp_path,
                                                           monkeypatch):  # fmt: skip
    """143 (SIGTERM), 138 (SIGUSR1), 130 (Ctrl-C) from the training child: the job is
    interrupted (no failed.txt: the next sweep resumes it), never finished; an error or
    an OOM kill stays a failure."""
    from experiments import sweep

    ending = (f"import os; os.kill(os.getpid(), {-status})" if status < 0
              else f"import sys; sys.exit({status})")  # fmt: skip
    job, folder, _ = _training_job(tmp_path, monkeypatch)
    monkeypatch.setattr(sys.modules["experiments.runner"], "fit_command",
                        lambda *args: [sys.executable, "-c", ending])  # fmt: skip
    outcome = job()
    assert outcome.reason is not None and outcome.interrupted is interrupted
    assert (sweep.failure(folder) is None) is interrupted
    if interrupted:
        assert outcome.reason.startswith("training dl1 stopped (SIG")


def test_sigterm_to_a_job_stops_its_child_which_ends_the_job_interrupted(tmp_path, monkeypatch):
    """SIGTERM to the job process (SLURM preemption, scancel, a controller stopping its
    tasks) goes on to the training child, which stops at its step; the job waits for it
    and ends interrupted. The child runs with submitit's preemption signal blocked."""
    import threading

    job, _, marker = _training_job(tmp_path, monkeypatch)

    def terminate_when_running() -> None:
        deadline = time.monotonic() + 60
        while not marker.is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # to the job (this process), not the child

    threading.Thread(target=terminate_when_running, daemon=True).start()
    outcome = job()
    assert outcome.interrupted and "stopped (SIGTERM)" in outcome.reason
    blocked, state = marker.read_text().split()
    assert state == "stopped"  # the child ended through its own SIGTERM handler
    assert int(blocked) & 1 << (submitit.JobEnvironment._usr_sig() - 1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the job's handler is gone


def test_submitits_requeue_hook_stops_the_child_at_its_step_first(tmp_path, monkeypatch):
    """`Job.checkpoint` (submitit calls it on its preemption / time-limit signal, then
    requeues what it returns) stops the child, which writes last.ckpt and exits 143,
    before it hands submitit the same job again."""
    import threading

    from experiments import sweep

    marker = tmp_path / "child.txt"
    codes = []
    thread = threading.Thread(target=lambda: codes.append(sweep.run_child(_child(marker))))
    thread.start()
    deadline = time.monotonic() + 60
    while not marker.is_file() and time.monotonic() < deadline:
        time.sleep(0.02)
    job = sweep.Job("dl1", tmp_path / "dl1", print)
    again = job.checkpoint()
    assert marker.read_text().endswith("stopped")  # before checkpoint returned
    thread.join(timeout=30)
    assert codes == [143]
    assert isinstance(job, submitit.helpers.Checkpointable) and again.function is job
