"""What many tests share: the tiny demo run's command line and the check that an import
pulls in no torch. Imported as ``from helpers import ...`` (pytest puts ``tests/``, the
folder of the root conftest.py, on ``sys.path``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def demo_args(root: str | Path, *more: str, configs: Sequence[str | Path] = ()) -> list[str]:
    """The settings of a tiny demo run, after its subcommand: ``configs/demo.yaml`` (and
    `configs` layered over it) on the Cityscapes-layout tree at `root`, a 16-channel
    ASPP, batches of 4 read in this process, no progress bar; then `more` (a later
    setting wins)."""
    layered = [arg for config in configs for arg in ("--config", str(config))]
    return ["--config", str(DEMO), *layered, "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
            "--model.net.init_args.aspp.init_args.channels", "16",
            "--trainer.enable_progress_bar", "false", *more]  # fmt: skip


def imported_packages(code: str) -> set[str]:
    """The top-level packages a fresh Python holds after running `code` (as ``python -c``
    from the repository): the way to check that an import or a ``--help`` needs no torch,
    since this test process has imported everything already."""
    probe = "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", code + probe], cwd=REPO,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.splitlines()[-1]))
