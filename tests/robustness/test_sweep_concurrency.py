"""Two `experiments.table1` commands on one ``--out``: one works there, the other says
which process has the folder and exits 1 without touching it; a killed demo generation
leaves no tree that a later run would take for the data set."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aspp_seg.data.datasets import demo
from aspp_seg.errors import ConfigError
from experiments import plans, runner, sweep, table1

REPO = Path(__file__).resolve().parents[2]
TABLE1 = [sys.executable, "-m", "experiments.table1"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_two_sweeps_on_one_fresh_folder_one_runs_the_other_says_so(tmp_path):
    """Started together on a folder that does not exist yet (they used to race in the
    demo-data generation, one dying with a traceback): exactly one trains and tabulates,
    the other exits 1 with one line naming the first's pid, and writes nothing."""
    out = tmp_path / "sweep"
    command = [*TABLE1, "--configs", "dl1", "--data", "demo", "--budget", "tiny",
               "--threads", "1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]  # fmt: skip
    try:
        ended = [(p, *p.communicate(timeout=300)) for p in both]
    finally:
        for p in both:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p, _, _ in ended)
    said = "\n".join(f"exit {p.returncode}\n{o[-2000:]}\n{e[-3000:]}" for p, o, e in ended)
    assert codes == [0, 1], said
    (winner, *_), (_, loser_out, loser_err) = sorted(ended, key=lambda e: e[0].returncode)
    assert loser_out == "", said  # it planned nothing, logged nothing
    lines = loser_err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in loser_err, said
    expected = rf"table1: error: {re.escape(str(out))} is in use by another table1 \(pid "
    assert re.match(rf"{expected}{winner.pid} on .+\); run this command again ", lines[0]), said

    # the winner's records are complete, and the loser left no trace of its own
    run = out / "runs" / "dl1"
    assert json.loads((run / "fit" / runner.FINISHED).read_text())["steps"] == plans.TINY_STEPS
    for name in ("train_iou.csv", "val_iou.csv", runner.PER_IMAGE, runner.IMAGES, runner.EVALUATED):
        assert (run / "eval" / name).is_file(), name
    assert not (run / sweep.LOCK).exists() and not (run / sweep.FAILED).exists()
    results = json.loads((out / "results.json").read_text())
    assert results["runs"]["dl1"]["state"] == "finished"
    assert (out / "table1.md").is_file() and (out / "table2.md").is_file()
    assert demo.generated_settings(out / "demo_data") is not None
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [table1.LOCK]
    assert len(list((out / "submitit").iterdir())) == 1
    assert (out / "sweep.log").read_text().count(" runs in ") == 1


def test_a_folder_held_by_a_live_process_is_refused_and_freed_when_it_is_killed(tmp_path, capsys):
    """The lock names its holder; nothing under --out changes; kill -9 of the holder frees
    the folder (the kernel drops the lock: nothing stale to clear by hand)."""
    out = tmp_path / "sweep"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from pathlib import Path\n"
         "from experiments.table1 import holding\n"
         "with holding(Path(sys.argv[1])):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(120)\n", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _files(out)
        command = ["--configs", "dl1", "--data", "demo", "--budget", "tiny", "--out", str(out)]
        with pytest.raises(SystemExit) as exit_info:
            table1.main(command)
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith(
            f"table1: error: {out} is in use by another table1 (pid {holder.pid} on "
        )
        assert _files(out) == before
        with pytest.raises(table1.FolderInUse), table1.holding(out):  # --collect alike
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with table1.holding(out):
        lock = json.loads((out / table1.LOCK).read_text())
        assert lock["pid"] == os.getpid()


def test_a_killed_demo_generation_leaves_no_tree(tmp_path, monkeypatch):
    """The set is generated beside its root and renamed into place: a generation that
    dies part-way leaves no root (so no run reads half a set); a staging folder that a
    killed process left is removed by the next generation."""
    root = tmp_path / "sweep" / "demo_data"
    settings = {"num_train": 4, "num_val": 2, "height": 16, "width": 32}
    frames, render = [], demo.render_image

    def dies_at_the_third_frame(rng, scene):
        frames.append(1)
        if len(frames) == 3:
            raise KeyboardInterrupt
        return render(rng, scene)

    monkeypatch.setattr(demo, "render_image", dies_at_the_third_frame)
    with pytest.raises(KeyboardInterrupt):
        runner.generate_demo(root, settings)
    assert not root.exists() and list(root.parent.iterdir()) == []
    monkeypatch.setattr(demo, "render_image", render)

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = root.with_name(f".demo_data.generating-{socket.gethostname()}-{dead.pid}")
    (stale / "leftImg8bit").mkdir(parents=True)
    runner.generate_demo(root, settings)
    assert sorted(p.name for p in root.parent.iterdir()) == ["demo_data"]
    assert demo.generated_settings(root) == {**demo.DEFAULT_SETTINGS, **settings}
    assert len(list(root.rglob("*_leftImg8bit.png"))) == 6
    kept = _files(root)
    runner.generate_demo(root, settings)  # there already: untouched
    assert _files(root) == kept


def test_a_file_system_without_locks_is_one_line(tmp_path, monkeypatch):
    """An NFS mount without its lock service (ENOLCK): said, not a traceback, and no
    sweep runs unlocked."""

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(table1.fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match=r"cannot lock .*\.table1\.lock \(No locks"):
        table1.run(["--configs", "dl1", "--data", "demo", "--budget", "tiny",
                    "--out", str(tmp_path / "sweep")])  # fmt: skip
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == [table1.LOCK]
