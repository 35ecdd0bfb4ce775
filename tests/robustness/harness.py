"""The robustness suite's table: one `Case` a row, checked by `check`.

A case is a command line, the files it starts from, the exit status it must end with,
a pattern for its last stderr line, and the files it may write. `check` runs it (in this
process, or as a real ``aspp-seg`` process where signals or the console script matter)
and asserts all four, plus that every other file under the workspace and the data set is
byte-identical afterwards and that no file appeared where the command was not asked to
write. A case that fails names the row.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Workspace:
    """The files a case starts from.

    Attributes:
        work: an empty folder of the test's own, the command's working directory.
        data: the tiny demo data set in the Cityscapes layout (shared: never written).
        config: a tiny fit config (``work/tiny.yaml``) that reads `data` and logs to
            ``work/runs/tiny``.
        run: a finished tiny run of that config (``work/runs/tiny/version_0``).
        ckpt: its ``checkpoints/last.ckpt``.
    """

    work: Path
    data: Path
    config: Path
    run: Path
    ckpt: Path

    def fill(self, text: str) -> str:
        return text.format(
            work=self.work, data=self.data, config=self.config, run=self.run, ckpt=self.ckpt
        )


@dataclass(frozen=True)
class Case:
    """One row of the suite.

    Attributes:
        id: the row's name in pytest's output.
        argv: the command line after ``aspp-seg``; ``{work}``, ``{data}``, ``{config}``,
            ``{run}`` and ``{ckpt}`` are filled in from the `Workspace`.
        status: the exit status the command must end with.
        last_line: a regular expression searched in the last non-empty stderr line.
        setup: makes the starting files (called with the Workspace before the run).
        writes: glob patterns, relative to ``work``, of the files the command may create,
            change or delete; every other file must be left byte-identical.
        shell: run a real ``aspp-seg`` process instead of calling it in this one.
        env: extra environment variables (shell cases only).
    """

    id: str
    argv: tuple[str, ...]
    status: int
    last_line: str
    setup: Callable[[Workspace], None] | None = None
    writes: tuple[str, ...] = ()
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.id


def snapshot(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under `roots`."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                files[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _allowed(path: Path, work: Path, patterns: tuple[str, ...]) -> bool:
    try:
        relative = path.relative_to(work).as_posix()
    except ValueError:
        return False  # outside the workspace: the data set, never written
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_shell(argv: list[str], cwd: Path, env: dict[str, str] | None = None, **kwargs):
    """``aspp-seg ARGV`` as a real process (the console script's own exit status)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "aspp_seg.cli", *argv]
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, **kwargs)


def check(case: Case, ws: Workspace, run_cli) -> subprocess.CompletedProcess:
    """Runs `case` in `ws` and asserts its exit status, last stderr line and files."""
    if case.setup is not None:
        case.setup(ws)
    before = snapshot(ws.work, ws.data)
    argv = [ws.fill(arg) for arg in case.argv]
    if case.shell:
        result = run_shell(argv, ws.work, case.env, timeout=300)
    else:
        result = run_cli(*argv, cwd=ws.work)
    line = last_line(result.stderr)
    context = f"[{case.id}] aspp-seg {' '.join(argv)}\n--- stderr tail:\n{result.stderr[-3000:]}"
    status = f"exit {result.returncode}, wanted {case.status}"
    assert result.returncode == case.status, f"{status} {context}"
    assert re.search(case.last_line, line), f"last line {line!r} !~ {case.last_line!r} {context}"
    after = snapshot(ws.work, ws.data)
    changed = [p for p in before if after.get(p) != before[p]]
    appeared = [p for p in after if p not in before]
    wrong = [p for p in changed + appeared if not _allowed(p, ws.work, case.writes)]
    assert not wrong, f"files written where not asked: {[str(p) for p in wrong]} {context}"
    return result
