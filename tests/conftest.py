"""Shared fixtures: a tiny synthetic Cityscapes tree, generated once per session, and
the real CamVid files when this machine has them.

Lightning is imported here, before any test captures output: it gives its loggers a
handler on the sys.stderr of the moment, and `aspp_seg.cli` now imports it only on
first use, which inside a test would bind that handler to the test's captured stream
(closed after the test: later tests then print "--- Logging error ---").
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import lightning.pytorch  # noqa: F401
import psutil
import pytest

from aspp_seg.data.datasets.demo import generate_demo_cityscapes

# Every process a test starts carries this in its environment (forks inherit the
# process instead), so that one left running after its test is found even once its
# parent is gone.
SESSION = os.environ["ASPP_SEG_TEST_SESSION"] = uuid.uuid4().hex


def _left_running() -> list[psutil.Process]:
    me = psutil.Process()
    found = {child.pid: child for child in me.children(recursive=True)}
    for process in psutil.process_iter():
        try:
            if process.pid != me.pid and process.environ().get("ASPP_SEG_TEST_SESSION") == SESSION:
                found[process.pid] = process
        except (psutil.Error, OSError):
            continue
    return list(found.values())


@pytest.fixture(autouse=True)
def no_process_left_running():
    """Fails a test that leaves a process of its own running (after 10 s of grace), and
    ends it: a leftover child (a loader worker, a killed sweep's training) kept the
    whole test run from ever exiting, and CI waited for it until its time ran out."""
    yield
    deadline = time.monotonic() + 10
    while (left := _left_running()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    names = []
    for process in left:
        try:
            names.append(f"{process.pid}: {' '.join(process.cmdline())[:200]}")
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(left, timeout=10)
    pytest.fail("the test left processes running: " + "; ".join(names))


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``aspp-seg ARGS`` run in this process from `cwd`, as a CompletedProcess (exit
    status, stdout, stderr). A subprocess would cost ~4 s of imports per call; tests that
    need a real shell (signals, workers, exit status of the console script) keep one."""
    from aspp_seg.cli.main import main

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = 0
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["aspp-seg", *args], code, out.out, out.err)

    return run


@pytest.fixture(scope="session")
def tiny_cityscapes(tmp_path_factory):
    """A synthetic data set in the Cityscapes layout: 16 train and 8 val 64x128 frames."""
    root = tmp_path_factory.mktemp("cityscapes")
    return generate_demo_cityscapes(root, num_train=16, num_val=8, height=64, width=128, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_cityscapes, tmp_path_factory):
    """A real `aspp-seg fit` checkpoint (demo config, 16 ASPP channels, two steps on
    `tiny_cityscapes`), with the run's config.yaml beside it. Used by predict / export."""
    from pathlib import Path

    from aspp_seg.cli.main import main

    work = tmp_path_factory.mktemp("tiny_run")
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    main(["fit", "--config", str(demo), "--data.init_args.root", str(tiny_cityscapes),
          "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.channels", "16",
          "--trainer.enable_progress_bar", "false",
          "--trainer.callbacks", "[]", "--trainer.max_steps", "2",
          "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(work)])  # fmt: skip
    checkpoints = sorted(work.rglob("*.ckpt"))
    assert checkpoints, f"no checkpoint under {work}"
    return checkpoints[-1]


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """Real CamVid in the SegNet tutorial layout (train/ trainannot/ val/ valannot/ ...):
    $ASPP_SEG_CAMVID if set, else the team's copy beside the repository, else the
    repository's data/camvid. Skips the test when none holds train/ and trainannot/."""
    repo = Path(__file__).resolve().parents[1]
    env = os.environ.get("ASPP_SEG_CAMVID")
    if env:
        candidates = [Path(env)]
    else:
        candidates = [repo.parent / "shared" / "data" / "camvid", repo / "data" / "camvid"]
    for root in candidates:
        if (root / "train").is_dir() and (root / "trainannot").is_dir():
            return root.resolve()
    pytest.skip(
        "real CamVid not found: set ASPP_SEG_CAMVID to a folder in the SegNet tutorial layout"
    )
