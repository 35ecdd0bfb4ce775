"""Sweeps over settings (`python -m experiments.table1 --grid`): the axes' syntax, each
cell an ordinary ``--out`` folder, killed and rerun, the tables per level and across
levels, and ``--collect`` from the records alone (no data folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from aspp_seg.errors import ConfigError
from experiments import plans, runner, sweep, table1

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "experiments" / "results" / "study_camvid"
CHANNELS = "model.net.init_args.aspp.init_args.channels"
LEVELS = ["channels=8", "channels=16"]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ------------------------------------------------------------------------ syntax


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("[176,240],[360,480]", ["[176,240]", "[360,480]"]),
        ("a:x.yaml,{b: [1, 2]},'c,d'", ["a:x.yaml", "{b: [1, 2]}", "'c,d'"]),
        ("0.01", ["0.01"]),
    ],
)  # fmt: skip
def test_levels_split_at_top_level_commas(text, levels):
    assert plans.split_levels(text) == levels


def test_an_axis_of_a_setting_of_overlays_or_of_budgets(tmp_path):
    size = plans.parse_axis("data.init_args.image_size=[176,240], [360,480]")
    assert [lv.folder for lv in size] == ["image_size=176x240", "image_size=360x480"]
    assert size[1].setting == ("data.init_args.image_size", "[360,480]")
    assert [lv.folder for lv in plans.parse_axis("model.optimizer.init_args.lr=0.01,0.1")] == [
        "lr=0.01", "lr=0.1"]  # fmt: skip

    big = tmp_path / "big.yaml"
    big.write_text("data.init_args.image_size: [360, 480]\n")
    aspp = plans.parse_axis(f"aspp_input=11x15:,23x30:{big}")
    assert [(lv.folder, lv.overlay) for lv in aspp] == [("aspp_input=11x15", None),
                                                       ("aspp_input=23x30", big)]  # fmt: skip
    budget = plans.parse_axis("budget=920,3450")
    assert [(lv.folder, lv.budget) for lv in budget] == [("budget=920", "920"),
                                                        ("budget=3450", "3450")]  # fmt: skip

    cells = plans.grid_cells([f"aspp_input=11x15:,23x30:{big}", "budget=920,3450"])
    assert [c.name for c in cells] == [f"aspp_input={a}/budget={b}" for a in ("11x15", "23x30")
                                       for b in (920, 3450)]  # fmt: skip
    assert cells[3].out(tmp_path) == tmp_path / "aspp_input=23x30" / "budget=3450"
    assert cells[3].budget == "3450" and cells[0].budget == "920"
    assert plans.grid_cells([]) == [plans.Cell()]
    assert plans.Cell().out(tmp_path) == tmp_path and plans.Cell().name == ""
    with pytest.raises(ConfigError, match="each axis once"):
        plans.grid_cells(["budget=1,2", "budget=3,4"])


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ("image_size", "expected KEY=V1,V2"),
        ("aspp_input=11x15:,23x30:no/such.yaml", "level 23x30: no such file no/such.yaml"),
        ("aspp_input=11x15:,23x30", "give every level as LEVEL:FILE, or none"),
        ("data.init_args.root=a/b,c", "makes no folder name"),
        ("model.optimizer.init_args.lr=0.1,0.10", "a name of its own"),
        ("trainer.max_steps=10,20", "use --grid budget=N1,N2"),
        ("seed_everything=0,1", "use --seeds"),
        ("budget=10,lots", "--budget 'lots'"),
    ],
)  # fmt: skip
def test_an_axis_that_does_not_parse_is_one_line(axis, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        table1.run(["--configs", "dl1", "--grid", axis, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_every_cell_as_one_slurm_array(tmp_path, capsys):
    """Two axes x two configs: eight jobs in one array, each named by its cell's folder,
    the level's setting last on its command line and the level's overlay after
    --overlay's; nothing written."""
    big = tmp_path / "big.yaml"
    big.write_text("data.init_args.val_batch_size: 1\n")
    out = tmp_path / "sweep"
    table1.main(["--configs", "dl1", "segnet", "--data", "demo", "--budget", "tiny",
                 "--grid", f"{CHANNELS}=8,16", f"size=small:,big:{big}",
                 "--out", str(out), "--dry-run", "--cluster", "slurm", "--jobs", "3"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "8 job(s) would be submitted" in printed and "#SBATCH --array=0-7%3" in printed
    for channels in (8, 16):
        for size in ("small", "big"):
            cell = f"channels={channels}/size={size}"
            line = next(x for x in printed.splitlines() if x.startswith(f"  {cell}/dl1: "))
            assert line.split(" --trainer.logger")[0].endswith(f"--{CHANNELS}={channels}")
            assert (f"--config {big}" in line) is (size == "big")
            assert f"{out}/{cell}/demo_data" in line  # each cell an ordinary --out folder
            segnet = next(x for x in printed.splitlines() if x.startswith(f"  {cell}/segnet: "))
            assert CHANNELS not in segnet  # SegNet's net takes no aspp: left out for it
    assert not out.exists()


# ----------------------------------------------------------- the sweep, in process


def _fake_scores(plan: plans.RunPlan) -> None:
    """What a finished run leaves (`runner.kept_scores`): finished.json at the budget and
    evaluation files of that step, with scores that differ by config and level, and by
    seed a little (with two seeds a side, the seed interval is wide: t(1))."""
    fit, folder = plan.folder / "fit", plan.folder / "eval"
    fit.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{plan.out.name}/{plan.spec.config}".encode()))
    counts = rng.integers(1, 10, size=(4, 2, 2))
    counts[0, 0, 1] += plan.spec.seed or 0
    diagonal = (1000 if plan.spec.config == "dl2" else 100) + 20 * (plan.out.name == LEVELS[1])
    counts[:, [0, 1], [0, 1]] += diagonal  # DL-2 better
    np.save(folder / runner.PER_IMAGE, counts)
    (folder / runner.IMAGES).write_text("a\nb\nc\nd\n")
    from experiments.stats import class_iou

    iou = 100 * class_iou(counts.sum(0))
    for split in runner.SPLITS:
        (folder / f"{split}_iou.csv").write_text(
            f"road,car,mIoU\n{iou[0]:.4f},{iou[1]:.4f},{iou.mean():.4f}\n")  # fmt: skip
    (folder / runner.EVALUATED).write_text(json.dumps({"step": plans.TINY_STEPS}))
    (fit / runner.FINISHED).write_text(json.dumps({"steps": plans.TINY_STEPS}))


def test_a_grid_killed_in_flight_and_rerun_runs_every_cell_once(tmp_path, monkeypatch, capsys):
    """Two levels of one setting x two configs x two seeds, the jobs run in this process
    with a stand-in for their work: the first command is killed (Ctrl-C) in its third job,
    which has a checkpoint at step 2 of 4; the same command again resumes that one, starts
    the rest and skips the two finished; every cell finished once, a table per level (an
    ordinary --out folder) and the table across levels."""
    import torch

    out = tmp_path / "sweep"
    done, started = [], []

    def work(plan: plans.RunPlan) -> None:
        name = table1.job_label(plan, out)
        started.append(name)
        if len(started) == 3:  # killed part-way: a checkpoint at step 2, nothing more
            checkpoint = plan.folder / "fit" / "checkpoints" / "last.ckpt"
            checkpoint.parent.mkdir(parents=True)
            torch.save({"state_dict": {}, "global_step": 2}, checkpoint)
            raise KeyboardInterrupt
        _fake_scores(plan)
        done.append(name)

    monkeypatch.setattr(table1, "run_one", work)  # what the command submits
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the runner adds the repository to it
    monkeypatch.setattr(sweep, "run_jobs", lambda jobs, engine, log: [job() for job in jobs])
    command = ["--configs", "dl1", "dl2", "--seeds", "0", "1", "--data", "demo",
               "--budget", "tiny", "--grid", f"{CHANNELS}=8,16", "--out", str(out)]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        table1.run(command)
    killed = started[2]
    assert len(done) == 2 and killed.startswith("channels=8/")
    assert not (out / "table_levels.md").exists()
    capsys.readouterr()

    table1.run(command)
    printed = capsys.readouterr().out
    cells = [f"{level}/{label}" for level in LEVELS
             for label in ("dl1_seed0", "dl1_seed1", "dl2_seed0", "dl2_seed1")]  # fmt: skip
    assert sorted(done) == sorted(cells)  # every cell finished once
    assert re.search(rf"{re.escape(killed)}\s+resume from step 2", printed), printed
    for name in done[:2]:
        assert re.search(rf"{re.escape(name)}\s+finished", printed), printed
    assert "8 runs in" in printed and "(2 cells of --grid)" in printed

    for level in LEVELS:  # each level: the layout of a plain run, nothing else
        folder = out / level
        figures = [f"{stem}.{ext}" for stem in ("class_iou", "learning_curves", "val_miou")
                   for ext in ("png", "svg")]  # fmt: skip
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [
                ".table1.lock",
                "demo_data",
                "results.json",
                "runs",
                "table1.md",
                "table2.md",
                *figures,
            ]
        )
        saved = json.loads((folder / "results.json").read_text())
        assert {r["state"] for r in saved["runs"].values()} == {"finished"}
        assert len(saved["runs"]) == 4
        assert "| DL-1 | dl1_seed1 |" in (folder / "table1.md").read_text()  # per-run rows
    assert {p.name for p in out.iterdir()} == {
        *LEVELS,
        ".table1.lock",
        "sweep.log",
        "table_levels.md",
        "table_levels.json",
        "levels.png",
        "levels.svg",
    }

    text = (out / "table_levels.md").read_text()
    rows = {_cells(x)[0]: _cells(x) for x in text.split("## Against")[0].splitlines()
            if x.startswith("| DL")}  # fmt: skip
    assert list(rows) == ["DL-1 (reference)", "DL-2"]
    assert all(cell.endswith("(n = 2)") for row in rows.values() for cell in row[1:])
    saved = json.loads((out / "table_levels.json").read_text())
    assert saved["levels"] == LEVELS and saved["grid"] == [f"{CHANNELS}=8,16"]
    for level in LEVELS:
        (pair,) = saved["pairs"][level]
        assert (pair["a"], pair["b"], pair["n_a"], pair["n_b"]) == ("dl1", "dl2", 2, 2)
        assert pair["interval"]["low"] > 0 and pair["p_holm"] < 0.05
        assert pair["verdict"] == "better"
        mean = saved["val_miou"][level]
        assert pair["diff"] == pytest.approx(mean["dl2"]["mean"] - mean["dl1"]["mean"])

    # --collect of the grid rewrites every table byte for byte, and reads no data folder
    tables = [*out.glob("table_levels.*"), *out.glob("*/table?.md"), *out.glob("*/results.json")]
    assert len(tables) == 2 + 3 * len(LEVELS)
    written = {p: p.read_bytes() for p in tables}
    for level in LEVELS:
        shutil.rmtree(out / level / "demo_data")
    table1.run([*command, "--collect"])
    assert {p: p.read_bytes() for p in written} == written


def test_pairs_with_a_one_run_side_get_no_verdict_and_holm_adjusts_the_rest(monkeypatch):
    from experiments import tables

    rng = np.random.default_rng(0)

    def runs(group: str, seeds: int, boost: int) -> dict[str, dict]:
        made = {}
        for seed in range(seeds):
            counts = rng.integers(1, 20, size=(6, 2, 2))
            counts[:, [0, 1], [0, 1]] += boost
            made[f"{group}_seed{seed}"] = {
                "group": group,
                "config": group,
                "state": "finished",
                "counts": counts,
            }
        return made

    results = {**runs("dl1", 3, 50), **runs("dl2", 3, 400), **runs("dl3", 3, 50),
               **runs("segnet", 1, 10)}  # fmt: skip
    from experiments.stats import miou

    for result in results.values():  # what collect gives, without files
        result["val"] = {"miou": float(miou(result["counts"].sum(0)))}
    monkeypatch.setattr(tables, "_per_image", lambda res, labels: [res[k]["counts"]
                                                                   for k in labels])  # fmt: skip
    methods = {"dl1": "DL-1", "dl2": "DL-2", "dl3": "DL-3", "segnet": "SegNet"}
    pairs = {(r["b"], r["a"]): r for r in tables.pairwise(results, "dl1", methods)}
    assert len(pairs) == 6
    for key in [("segnet", "dl1"), ("segnet", "dl2"), ("segnet", "dl3")]:
        assert pairs[key]["verdict"] == "no verdict: SegNet has 1 run (no seed interval)"
        assert pairs[key]["interval"] is None and np.isnan(pairs[key]["p_holm"])
    tested = [pairs[k] for k in [("dl2", "dl1"), ("dl3", "dl1"), ("dl3", "dl2")]]
    from experiments.stats import holm

    adjusted = holm([r["p"] for r in tested])
    assert [r["p_holm"] for r in tested] == pytest.approx(list(adjusted))
    assert pairs[("dl2", "dl1")]["verdict"] == "better"
    assert pairs[("dl3", "dl2")]["verdict"] == "worse"
    assert pairs[("dl3", "dl1")]["verdict"] == "not distinguishable at n = 3"


# ------------------------------------------------------- --collect, no data folder


def test_collect_needs_no_data_folder_and_keeps_the_recorded_data(tmp_path, capsys, monkeypatch):
    """The study's records (two runs of them) with ``--data`` naming a folder that is not
    there, then without ``--data``: the tables are the same bytes, ``results.json`` still
    says what the runs read; a run of --configs without records has no row."""
    monkeypatch.chdir(REPO)  # the overlay's path is the README's, from the repository
    out = tmp_path / "study"
    for label in ("dl1_seed0", "dl2_seed0"):
        shutil.copytree(STUDY / "runs" / label, out / "runs" / label)
    command = ["--configs", "dl1@seed=0", "dl2@seed=0", "dl3@seed=0", "--reference", "dl1",
               "--overlay", "configs/overlay/study_camvid.yaml", "--budget", "920",
               "--out", str(out), "--collect"]  # fmt: skip
    table1.run([*command, "--data", str(tmp_path / "no" / "camvid")])
    assert "no records of dl3_seed0; left out of the tables" in capsys.readouterr().out
    first = {p.name: p.read_bytes() for p in out.glob("[tr]*.*")}
    assert sorted(first) == ["results.json", "table1.md", "table2.md"]
    assert json.loads(first["results.json"])["meta"]["data"] == str(tmp_path / "no" / "camvid")
    assert "dl3" not in first["table2.md"].decode()
    table1.run(command)
    assert {p.name: p.read_bytes() for p in out.glob("[tr]*.*")} == first


def test_collect_rewrites_the_committed_study_tables_byte_for_byte(tmp_path, monkeypatch):
    """The study README's --collect command as written, on a copy of the records, with no
    data folder anywhere: every table and figure it writes is the committed one, byte for
    byte."""
    monkeypatch.chdir(REPO)
    copy = tmp_path / STUDY.name
    shutil.copytree(STUDY, copy)
    readme = (STUDY / "README.md").read_text().replace("\\\n", " ")
    (command,) = [c.split() for c in re.findall(r"python -m experiments\.table1 ([^`]*?)\n\n",
                                                readme) if "--collect" in c]  # fmt: skip
    out = command.index("--out") + 1
    assert Path(command[out]).resolve() == STUDY
    command[out] = str(copy)
    table1.run(command)
    tables = [p.relative_to(copy) for p in copy.rglob("*")
              if p.name.startswith("table") or p.name == "results.json"
              or p.suffix in (".png", ".svg")]  # fmt: skip
    assert Path("table1.md") in tables or Path("table_levels.md") in tables
    for name in tables:
        assert (copy / name).read_bytes() == (STUDY / name).read_bytes(), name


# ------------------------------------------------------- the real thing (slow)


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.slow
def test_a_real_grid_killed_and_rerun_gives_every_cell_once(tmp_path):
    """Two levels of the ASPP width x DL-1 and DL-2 at the tiny budget on the demo data,
    two local jobs at once; the process group is killed (SIGKILL) once one run has
    finished; the same command again finishes every cell, the finished run untouched."""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "experiments.table1", "--configs", "dl1", "dl2",
               "--data", "demo", "--budget", "tiny", "--jobs", "2", "--threads", "1",
               "--grid", f"{CHANNELS}=8,16", "--out", str(out)]  # fmt: skip
    cells = [out / level / "runs" / label for level in LEVELS for label in ("dl1", "dl2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)  # fmt: skip
        finished = {}
        deadline = time.time() + 400
        try:
            while time.time() < deadline and first.poll() is None and not finished:
                finished = {c: (c / "fit" / runner.FINISHED).stat().st_mtime_ns for c in cells
                            if (c / "eval" / runner.EVALUATED).is_file()}  # fmt: skip
                time.sleep(0.2)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert finished and len(finished) < len(cells), (tmp_path / "first.log").read_text()[-3000:]
    for _ in range(100):
        if not _group_alive(first.pid):
            break
        time.sleep(0.1)

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for cell in cells:
        record = json.loads((cell / "fit" / runner.FINISHED).read_text())
        assert record["steps"] == plans.TINY_STEPS
        assert record["code"] == runner.code_version()  # the commit that trained it
        assert record["code"] is None or record["code"].startswith(_head())
        assert (cell / "eval" / runner.PER_IMAGE).is_file()
    for cell, mtime in finished.items():  # not retrained
        assert (cell / "fit" / runner.FINISHED).stat().st_mtime_ns == mtime
        name = f"{cell.parent.parent.name}/{cell.name}"
        assert re.search(rf"{re.escape(name)}\s+finished", again.stdout), again.stdout
    for level in LEVELS:
        assert (out / level / "table1.md").is_file() and (out / level / "table2.md").is_file()
    text = (out / "table_levels.md").read_text()
    assert _cells(text.splitlines()[2]) == ["Method", *LEVELS]
    assert re.search(r"^\| DL-2 \| .*\(n = 1\) \| .*\(n = 1\) \|$", text, re.MULTILINE), text


def _head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def test_a_finished_run_records_the_commit_that_trained_it(tmp_path):
    """finished.json names the code's commit (``+changes`` when tracked files differ), so
    that a sweep's records say which code made them."""
    from types import SimpleNamespace

    (tmp_path / "fit").mkdir()
    runner._mark_finished(SimpleNamespace(folder=tmp_path, steps=4), 4)
    record = json.loads((tmp_path / "fit" / runner.FINISHED).read_text())
    assert record["steps"] == 4 and record["budget"] == 4
    head = _head()
    assert head and record["code"] in (head, f"{head}+changes")
