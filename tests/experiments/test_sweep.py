"""The sweep runner (`python -m experiments.table1` on submitit): killed and rerun, a
failing job beside a finishing one, ``--dry-run`` for SLURM, and the run folders' state."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import imported_packages

from aspp_seg.errors import ConfigError, RunFailed
from experiments import plans, runner, sweep, table1
from experiments.study import load_study

REPO = Path(__file__).resolve().parents[2]
TABLE1 = [sys.executable, "-m", "experiments.table1"]
# a 12-step budget on 8 + 4 frames of 64 x 128: 4 steps an epoch, a last.ckpt after each
SMALL = ["data.init_args.num_train=8", "data.init_args.num_val=4",
         "data.init_args.height=64", "data.init_args.width=128",
         "data.init_args.batch_size=2", "data.init_args.num_workers=0",
         "model.net.init_args.backbone=resnet10t", "model.net.init_args.pretrained=false",
         "model.net.init_args.aspp.init_args.channels=16",
         "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
         "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]  # fmt: skip
LABELS = ["dl1_seed0", "dl1_seed1", "dl2_seed0", "dl2_seed1"]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _checkpoint(out: Path, label: str) -> Path:
    return out / "runs" / label / "fit" / "checkpoints" / "last.ckpt"


def _finished(out: Path, label: str) -> bool:
    return (out / "runs" / label / "fit" / runner.FINISHED).is_file()


def _logged_steps(out: Path, label: str) -> list[int]:
    with (out / "runs" / label / "fit" / "metrics.csv").open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.slow  # four real trainings and a rerun: 100 s idle, 330 s beside a training
def test_sweep_killed_in_flight_resumes_on_rerun(tmp_path):
    """Two configs x two seeds, two local jobs at once, killed (the whole process group,
    SIGKILL) once one run has finished and another is part-way; the same command again
    finishes every run once: the finished ones untouched, the interrupted ones resumed
    from their checkpoint's step, their logged steps continuous."""
    out = tmp_path / "sweep"
    command = [*TABLE1, "--configs", "dl1", "dl2", "--seeds", "0", "1", "--data", "demo",
               "--budget", "12", "--jobs", "2", "--threads", "1", "--out", str(out),
               "--set", *SMALL]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)  # fmt: skip
    finished, partial = {}, {}
    deadline = time.time() + 400
    try:
        while time.time() < deadline and first.poll() is None:
            done = [k for k in LABELS if _finished(out, k)]
            started = [k for k in LABELS if k not in done and _checkpoint(out, k).is_file()]
            steps = {k: runner.checkpoint_step(_checkpoint(out, k)) for k in started}
            partial = {k: step for k, step in steps.items() if step < 12}
            if done and partial:
                os.killpg(first.pid, signal.SIGKILL)
                finished = {k: _checkpoint(out, k).stat().st_mtime_ns for k in done}
                break
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()
    assert finished and partial, (tmp_path / "first.log").read_text()[-3000:]
    assert all(step > 0 for step in partial.values()), partial
    for _ in range(100):  # the jobs and their training children die with the group
        if not _group_alive(first.pid):
            break
        time.sleep(0.1)
    assert not _group_alive(first.pid)

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=400)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for label, step in partial.items():
        assert re.search(rf"{label}\s+resume from step {step}\b", again.stdout), again.stdout
    for label in finished:
        assert re.search(rf"{label}\s+(finished|evaluate)", again.stdout), again.stdout
    for label in LABELS:  # every run finished once, with every step logged once, in order
        record = json.loads((out / "runs" / label / "fit" / runner.FINISHED).read_text())
        assert record["steps"] == 12
        assert _logged_steps(out, label) == list(range(12)), label
        assert (out / "runs" / label / "eval" / runner.PER_IMAGE).is_file()
        assert not (out / "runs" / label / sweep.LOCK).exists()
    for label, mtime in finished.items():  # not retrained
        assert _checkpoint(out, label).stat().st_mtime_ns == mtime
    for label, step in partial.items():  # resumed, not restarted
        fit_log = (out / "runs" / label / "fit" / "fit.log").read_text()
        assert f"step {step})" in fit_log and "resuming from" in fit_log

    t2 = (out / "table2.md").read_text()
    rows = {_cells(line)[0]: _cells(line) for line in t2.splitlines() if line.startswith("| DL")}
    for label in LABELS:
        method = "DL-1" if label.startswith("dl1") else "DL-2"
        assert rows[f"{method} ({label})"][1] == "12"
    assert rows["DL-2"][1] == "2" and rows["DL-2"][-1] in ("better", "worse",
                                                           "not distinguishable")  # fmt: skip
    assert "DL-1 (mean ± sd, 2 seeds)" in rows
    saved = json.loads((out / "results.json").read_text())
    assert {r["state"] for r in saved["runs"].values()} == {"finished"}
    assert saved["comparison"]["dl2"]["images"] is not None  # the per-image counts were there


def test_a_failing_job_is_reported_while_the_other_finishes(tmp_path):
    """A config that cannot build its net fails with the child's one-line error; DL-1 at
    the tiny budget trains, is scored beside the study, and the tables show both."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"config: {REPO / 'configs' / 'dl1.yaml'}\n"
                   "model.net.init_args.aspp.init_args.rates: [0, 6]\n")  # fmt: skip
    out = tmp_path / "results"
    command = [*TABLE1, "--configs", "dl1", str(bad), "--data", "demo", "--budget", "tiny",
               "--jobs", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=400)  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    reason = "training bad failed (exit status 2): rates=[0, 6] must all be >= 1"
    assert "bad: FAILED" in result.stdout and reason in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("table1: error: 1 of 2 runs failed")
    assert reason in (out / "sweep.log").read_text()
    assert reason in (out / "runs" / "bad" / sweep.FAILED).read_text()

    study = load_study()["dl1"]
    val = runner.read_iou_csv(out / "runs" / "dl1" / "eval" / "val_iou.csv")
    t1 = (out / "table1.md").read_text()
    assert "These numbers mean nothing" in t1
    lines = [line for line in t1.splitlines() if line.startswith("|")]
    ours, theirs, diff, failed = (_cells(line) for line in lines[2:6])
    assert ours[:2] == ["DL-1", "this run (dl1)"] and theirs[1] == "study"
    assert [float(x) for x in theirs[2:]] == [*study.iou, study.miou]
    for i, value in enumerate([*val["iou"], val["miou"]]):
        if value != value:  # a class that the demo data does not contain
            assert ours[2 + i] == "-" and diff[2 + i] == "-"
        else:
            assert float(ours[2 + i]) == pytest.approx(100 * value, abs=0.006)
            assert float(diff[2 + i]) == pytest.approx(float(ours[2 + i]) - float(theirs[2 + i]))
    assert failed[0] == "bad" and failed[1].startswith(f"bad: failed: {reason}")

    t2 = (out / "table2.md").read_text()
    row = _cells(next(line for line in t2.splitlines() if line.startswith("| DL-1")))
    assert row[1] == "4" and row[2].endswith(" min")  # the tiny budget's steps
    assert float(row[4]) == study.train_miou == 69.2
    assert float(row[6]) == pytest.approx(100 * val["miou"], abs=0.006)
    assert float(row[8]) == pytest.approx(float(row[6]) - 65.43)
    bad_row = _cells(next(line for line in t2.splitlines() if line.startswith("| bad")))
    assert bad_row[3].startswith(f"failed: {reason}")
    # one run per side: no seed interval, so no verdict beyond "not distinguishable"
    assert "| bad |" not in t2.split("## Against")[1]  # no finished run to compare

    # the per-image counts add up to the evaluation's confusion matrix
    import numpy as np

    counts = np.load(out / "runs" / "dl1" / "eval" / runner.PER_IMAGE)
    names = (out / "runs" / "dl1" / "eval" / runner.IMAGES).read_text().split()
    assert counts.shape == (4, 19, 19) and len(names) == 4
    from experiments.stats import miou

    assert miou(counts.sum(0)) == pytest.approx(val["miou"], abs=5e-7)
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"]["bad"]["state"] == "failed" and saved["runs"]["dl1"]["steps"] == 4


def test_dry_run_prints_the_slurm_jobs_without_a_cluster(tmp_path, capsys):
    assert shutil.which("sbatch") is None  # no SLURM here
    out = tmp_path / "sweep"
    overlay = tmp_path / "overlay.yaml"  # SegNet takes no backbone: its copy leaves it out
    overlay.write_text("model.net.init_args.backbone: resnet18\n")
    table1.main(["--configs", "dl1", "segnet", "--seeds", "0", "1", "--data", "demo",
                 "--overlay", str(overlay),
                 "--budget", "tiny", "--out", str(out), "--dry-run",
                 "--cluster", "slurm", "--partition", "gpu", "--gpus_per_job", "2",
                 "--time_min", "600", "--threads", "8", "--jobs", "3",
                 "--slurm", "account=abc", "qos=high", "reservation=r1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "4 job(s) would be submitted" in printed
    for label in ("dl1_seed0", "dl1_seed1", "segnet_seed0", "segnet_seed1"):
        assert re.search(rf"{label}\s+new", printed)
        command = next(line for line in printed.splitlines() if line.startswith(f"  {label}: "))
        assert f'"name": "{label}", "version": "fit"' in command
        assert command.endswith("--ckpt_path last")
    for flag in ("--partition=gpu", "--gpus-per-node=2", "--time=600", "--cpus-per-task=8",
                 "--array=0-3%3", "--account=abc", "--qos=high", "--reservation=r1",
                 "--ntasks-per-node=1"):  # fmt: skip
        assert f"#SBATCH {flag}" in printed, flag
    assert not out.exists()  # nothing written, nothing submitted


@pytest.mark.parametrize(("given", "expected"), [
    ([], False), (["--collect"], True), (["--collect", "true"], True),
    (["--collect", "false"], False)])  # fmt: skip
def test_the_switches_take_a_bare_flag_or_a_value(given, expected):
    base = ["--configs", "dl1"]
    assert table1.build_parser().parse_args(base + given).collect is expected
    dry_run = [arg.replace("--collect", "--dry-run") for arg in given]
    assert table1.build_parser().parse_args(base + dry_run).dry_run is expected


def test_a_killed_worker_is_a_failed_run_and_the_other_jobs_go_on(tmp_path, monkeypatch):
    """Through submitit's local executor: a job whose process dies without a result (as
    a worker killed by the system would) is reported with that reason; the other runs."""
    import submitit

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    # submitit waits 15 s for a result file that a slow shared file system may not show yet
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)
    engine = sweep.Engine(folder=tmp_path / "submitit", jobs=2, threads=1, poll_s=0.2)
    dies, lives = tmp_path / "runs" / "dies", tmp_path / "runs" / "lives"
    jobs = [sweep.Job("dies", dies, functools.partial(os._exit, 9)),
            sweep.Job("lives", lives, functools.partial(time.sleep, 0))]  # fmt: skip
    lines = []
    outcomes = sweep.run_jobs(jobs, engine, lines.append)
    assert outcomes[1] == sweep.Outcome("lives")
    assert outcomes[0].reason.startswith(
        "the job's process ended without a result (has not produced any output"
    ), outcomes
    assert sweep.failure(dies) == outcomes[0].reason and sweep.failure(lives) is None
    assert any(line.startswith("dies: FAILED") for line in lines), lines
    assert sweep.running(dies) is None  # its lock is stale: the next sweep retries it


def test_the_slurm_executor_gets_the_options(tmp_path, monkeypatch):
    """The real submission path up to sbatch: submitit's AutoExecutor for SLURM, made
    believe srun is there, takes every option (nothing is submitted)."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    engine = sweep.Engine(cluster="slurm", folder=tmp_path, jobs=2, threads=8, gpus_per_job=4,
                          time_min=90, partition="gpu",
                          slurm={"account": "abc", "reservation": "r1"})  # fmt: skip
    params = sweep.slurm_executor(engine, 6)._executor.parameters
    assert {k: params[k] for k in ("partition", "gpus_per_node", "time", "cpus_per_task",
                                   "array_parallelism", "ntasks_per_node", "account")} == {
        "partition": "gpu", "gpus_per_node": 4, "time": 90, "cpus_per_task": 8,
        "array_parallelism": 2, "ntasks_per_node": 1, "account": "abc"}  # fmt: skip
    assert params["additional_parameters"] == {"reservation": "r1"}


def test_help_imports_neither_torch_nor_submitit(capsys):
    code = "from experiments import table1\ntry: table1.main(['--help'])\nexcept SystemExit: pass"
    assert not imported_packages(code) & {"torch", "lightning", "submitit", "scipy"}
    with pytest.raises(SystemExit):
        table1.main(["--help"])
    printed = capsys.readouterr().out
    assert "--seeds" in printed and "--cluster" in printed


def test_engine_options_are_checked():
    with pytest.raises(ConfigError, match="--cluster 'pbs'"):
        sweep.Engine(cluster="pbs")
    with pytest.raises(ConfigError, match="SLURM options"):
        sweep.Engine(partition="gpu")
    with pytest.raises(ConfigError, match="--jobs 0"):
        sweep.Engine(jobs=0)
    engine = sweep.Engine(cluster="slurm", slurm={"mem": "64G", "reservation": "r1"})
    params = sweep.slurm_parameters(engine, 5)
    assert params["array_parallelism"] == 5 and params["mem"] == "64G"  # submitit's own
    assert params["additional_parameters"] == {"reservation": "r1"}  # written as given
    with pytest.raises(ConfigError, match="seeds with @seed= or --seeds"):
        plans.expand_runs(["dl1@seed=1"], [0])
    with pytest.raises(ConfigError, match="given twice"):
        plans.expand_runs(["dl1", "dl1"])
    assert [s.label for s in plans.expand_runs(["dl1", "segnet@steps=60"], [0, 1])] == [
        "dl1_seed0", "dl1_seed1", "segnet_steps60_seed0", "segnet_steps60_seed1"]  # fmt: skip


def _fails(reason: str) -> None:
    raise RunFailed(reason)


def _succeeds(folder: Path) -> None:
    assert json.loads((folder / sweep.LOCK).read_text())["pid"] == os.getpid()  # held


def test_a_job_records_its_reason_and_holds_its_run(tmp_path):
    folder = tmp_path / "runs" / "dl1"
    outcome = sweep.Job("dl1", folder, functools.partial(_fails, "diverged\nat step 3"))()
    assert outcome == sweep.Outcome("dl1", "diverged at step 3")
    assert sweep.failure(folder) == "diverged at step 3"
    assert not (folder / sweep.LOCK).exists()
    assert sweep.Job("dl1", folder, functools.partial(_succeeds, folder))() == sweep.Outcome("dl1")
    assert sweep.failure(folder) is None and not (folder / sweep.LOCK).exists()

    here = socket.gethostname()
    lock = folder / sweep.LOCK
    lock.write_text(json.dumps({"host": here, "pid": os.getpid(), "job": "7", "beat": 0}))
    assert sweep.running(folder) == f"job 7, pid {os.getpid()} on {here}"
    busy = sweep.Job("dl1", folder, functools.partial(_fails, "never run"))()
    assert busy.reason.startswith("already running: job 7")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"host": here, "pid": dead.pid, "job": "8", "beat": time.time()}))
    assert sweep.running(folder) is None  # killed job: stale
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "job": "9", "beat": time.time()}))
    assert sweep.running(folder) == "job 9, pid 1 on elsewhere"  # heartbeat fresh
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "job": "9", "beat": 0}))
    assert sweep.running(folder) is None


def test_run_state_from_the_run_folder(tmp_path, tiny_checkpoint):
    """A checkpoint without ``finished.json`` is resumed (its training then marks it), one
    with it is evaluated next, a shorter one than the budget is resumed; a config that
    does not parse is a failed run. Reading the state writes nothing."""
    spec = plans.RunSpec("dl1", "dl1")
    config = plans.config_path("dl1")
    plan = plans.RunPlan(spec, config, (), tmp_path, "2")
    assert runner.run_state(plan) == runner.RunState("new")
    checkpoint = _checkpoint(tmp_path, "dl1")
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoint)  # 2 steps done
    assert runner.run_state(plan) == runner.RunState("resume", "from step 2")
    assert not _finished(tmp_path, "dl1")
    runner._mark_finished(plan, 2)
    assert runner.run_state(plan) == runner.RunState("evaluate", "trained to step 2")
    longer = plans.RunPlan(spec, config, (), tmp_path, "5")
    assert runner.run_state(longer) == runner.RunState("resume", "from step 2")
    assert runner.fit_record(longer) is None  # the marker is for 2 steps, not 5
    assert runner.fit_record(plans.RunPlan(spec, config, (), tmp_path, "full")) is None
    broken = plans.RunPlan(spec, config, (), tmp_path, "2", error="config: no such key")
    assert runner.run_state(broken) == runner.RunState("failed", "config: no such key")
    assert runner.collect(broken)["reason"] == "config: no such key"


def test_a_finished_run_without_its_checkpoint_keeps_its_scores(tmp_path, tiny_checkpoint):
    """Checkpoints deleted after the evaluation (to save disk, or a run folder copied
    without them): the run stays finished and is not retrained, its scores are read from
    its files; scores of another step than the finished one do not count."""
    spec = plans.RunSpec("dl1", "dl1")
    plan = plans.RunPlan(spec, plans.config_path("dl1"), (), tmp_path, "2")
    checkpoint = _checkpoint(tmp_path, "dl1")
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoint)  # 2 steps done
    runner._mark_finished(plan, 2)
    folder = tmp_path / "runs" / "dl1" / "eval"
    folder.mkdir()
    for split, miou in (("train", "60.00"), ("val", "50.00")):
        (folder / f"{split}_iou.csv").write_text(f"road,car,mIoU\n{miou},{miou},{miou}\n")
    import numpy as np

    np.save(folder / runner.PER_IMAGE, np.ones((3, 2, 2), dtype=np.int64))
    (folder / runner.IMAGES).write_text("a\nb\nc\n")
    assert runner.run_state(plan).what == "evaluate"  # no evaluated.json: not complete
    runner._mark_evaluated(tmp_path, "dl1", checkpoint)  # the evaluation's last file
    assert runner.run_state(plan).what == "finished"
    assert json.loads((folder / runner.EVALUATED).read_text())["step"] == 2

    checkpoint.unlink()
    state = runner.run_state(plan)
    assert state == runner.RunState("finished", "step 2 (scores kept, no checkpoint)")
    assert not state.submit
    row = runner.collect(plan, evaluate_missing=True)
    assert row["state"] == "finished" and row["steps"] == 2
    assert row["val"]["miou"] == pytest.approx(0.5) and row["train"]["miou"] == pytest.approx(0.6)
    assert row["per_image"] == folder / runner.PER_IMAGE

    (folder / runner.EVALUATED).write_text(json.dumps({"step": 1}))  # scores of another step
    assert runner.run_state(plan).what == "new"
    assert runner.collect(plan)["state"] == "not run"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--configs", "nosuch"], "--configs nosuch: no "),
        (["--configs", "dl1", "--budget", "lots"], "--budget 'lots'"),
        (["--configs", "dl1", "--data", "/no/such/root"], "--data /no/such/root: not a folder"),
        (["--configs", "dl1", "--cluster", "slurm"], "--cluster slurm: no srun here"),
    ],
)  # fmt: skip
def test_a_mistake_in_the_command_stops_it_before_out_is_made(given, message, tmp_path):
    assert shutil.which("srun") is None  # no SLURM here
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match=re.escape(message)):
        table1.run([*given, "--out", str(out), *(["--budget", "tiny"] * ("--budget" not in given))])
    assert not out.exists()
