"""Checkpoints are data, never code; a checkpoint write leaves the old file or the new one;
a file system that refuses a write is one line naming the path.

The hostile checkpoint is a real one of the finished tiny run with one more entry: an
object whose unpickling would write a marker file (through ``os.system``, ``exec`` or
``pathlib.Path.write_text``). Every way into a checkpoint must refuse it, in one line that
names what it asked for, and the marker must never appear.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import pathlib
from pathlib import Path

import pytest
import torch
from harness import Case, check

from aspp_seg.errors import ConfigError, FileSystemError

MARKER = "MARKER"  # in the workspace: a file there that no row allows fails the row too


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


class _WriteText:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "ran")


PAYLOADS = {"os.system": _System, "exec": _Exec, "Path.write_text": _WriteText}
ASKS = {  # what the refusal names (torch's scan of the file, sorted)
    "os.system": r"posix\.system",
    "exec": r"builtins\.exec",
    "Path.write_text": r".*pathlib\.Path\b",
}


def make_hostile(source: Path, target: Path, marker: Path, payload: str = "os.system") -> Path:
    """`source` (a real checkpoint) saved to `target` with an entry that writes `marker`
    when unpickled."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    state["hostile"] = PAYLOADS[payload](marker)
    torch.save(state, target)
    return target


def _hostile_file(payload: str = "os.system"):
    def setup(ws) -> None:
        make_hostile(ws.ckpt, ws.work / "hostile.ckpt", ws.work / MARKER, payload)

    return setup


def _hostile_last(ws) -> None:  # the run's own last.ckpt, found by --ckpt_path last
    make_hostile(ws.ckpt, ws.ckpt, ws.work / MARKER)


def _hostile_hpc(ws) -> None:  # Lightning's own restore: hpc_ckpt_N.ckpt in the root dir
    make_hostile(ws.ckpt, ws.work / "hpc_ckpt_1.ckpt", ws.work / MARKER)


REFUSED = r"^aspp-seg: error: checkpoint .*{name} is refused: it asks to load {asks}"
HOSTILE = "{work}/hostile.ckpt"

CASES = [
    *(
        Case(
            f"validate refuses a hostile checkpoint ({payload})",
            ("validate", "--config", "{config}", "--ckpt_path", HOSTILE),
            2,
            REFUSED.format(name=r"hostile\.ckpt", asks=ASKS[payload]),
            setup=_hostile_file(payload),
        )
        for payload in PAYLOADS
    ),
    *(
        Case(
            f"{command} --ckpt_path refuses a hostile checkpoint",
            (command, "--config", "{config}", "--ckpt_path", HOSTILE),
            2,
            REFUSED.format(name=r"hostile\.ckpt", asks=r"posix\.system"),
            setup=_hostile_file(),
        )
        for command in ("test", "predict", "fit")
    ),
    Case(
        "validate --weights_only true refuses a hostile checkpoint",
        ("validate", "--config", "{config}", "--ckpt_path", HOSTILE, "--weights_only", "true"),
        2,
        REFUSED.format(name=r"hostile\.ckpt", asks=r"posix\.system"),
        setup=_hostile_file(),
    ),
    Case(
        "fit --ckpt_path last refuses the run's hostile last.ckpt",
        ("fit", "--config", "{config}", "--ckpt_path", "last"),
        2,
        REFUSED.format(name=r"last\.ckpt", asks=r"posix\.system"),
        setup=_hostile_last,
    ),
    Case(
        "Lightning's own restore (--ckpt_path hpc) refuses a hostile checkpoint",
        ("fit", "--config", "{config}", "--ckpt_path", "hpc"),
        2,
        REFUSED.format(name=r"hpc_ckpt_1\.ckpt", asks=r"posix\.system"),
        setup=_hostile_hpc,
        writes=("runs/tiny/version_1/**",),  # the new run's folder, made before the restore
    ),
    Case(
        "export refuses a hostile checkpoint and writes no model",
        ("export", "--ckpt_path", HOSTILE, "--config", "{run}/config.yaml", "--size", "64", "64"),
        2,
        REFUSED.format(name=r"hostile\.ckpt", asks=r"posix\.system"),
        setup=_hostile_file(),
    ),
    Case(
        "--weights_only false is refused: no unsafe load",
        ("validate", "--config", "{config}", "--ckpt_path", "{ckpt}", "--weights_only", "false"),
        2,
        r"^aspp-seg: error: --weights_only false is not supported: .*data only",
        writes=("runs/tiny/version_0/validate/**",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case, ws, run_cli):
    check(case, ws, run_cli)
    assert not (ws.work / MARKER).exists(), f"[{case.id}] the checkpoint ran code"


# --- Python entry points: load_model and the sweep runner ---


@pytest.mark.parametrize("where", ["run folder", "file"])
def test_load_model_refuses_a_hostile_checkpoint(ws, where):
    import aspp_seg

    make_hostile(ws.ckpt, ws.ckpt, ws.work / MARKER)
    with pytest.raises(ConfigError, match=r"last\.ckpt is refused: it asks to load posix\.system"):
        aspp_seg.load_model(ws.run if where == "run folder" else ws.ckpt)
    assert not (ws.work / MARKER).exists()


def test_the_sweep_runner_refuses_a_hostile_checkpoint(ws):
    from experiments import plans, runner

    spec = plans.RunSpec("dl1", "dl1")
    plan = plans.RunPlan(spec, plans.config_path("dl1"), (), ws.work / "table1", "2")
    checkpoint = ws.work / "table1" / "runs" / "dl1" / "fit" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    make_hostile(ws.ckpt, checkpoint, ws.work / MARKER)
    with pytest.raises(ConfigError, match=r"it asks to load posix\.system"):
        runner.run_state(plan)
    assert not (ws.work / MARKER).exists()


def test_safe_checkpoint_io_refuses_a_hostile_checkpoint(ws):
    """Lightning's reader in every trainer aspp-seg builds (trainer.fit / validate / ...
    with ckpt_path, in Python as on the command line)."""
    from aspp_seg.training.checkpoint_io import SafeCheckpointIO

    hostile = make_hostile(ws.ckpt, ws.work / "hostile.ckpt", ws.work / MARKER)
    with pytest.raises(ConfigError, match=r"posix\.system"):
        SafeCheckpointIO().load_checkpoint(hostile)
    assert not (ws.work / MARKER).exists()
    assert SafeCheckpointIO().load_checkpoint(ws.ckpt)["global_step"] == 2


# --- full disk, read-only folder ---


class _FillsUp:
    """A file that takes `room` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _full_disk_for_checkpoints(monkeypatch, room: int = 2**20) -> None:
    """Every checkpoint write fails after its first `room` bytes with ENOSPC, as on a full
    disk (torch.save then raises a RuntimeError from the OSError)."""
    save = torch.save

    def fills_up(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike):
            return save(obj, f, *args, **kwargs)
        return save(obj, _FillsUp(f, room), *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)


def _full_disk_under(folder: Path, monkeypatch) -> None:
    """Every file opened for writing under `folder` fails on its first write with ENOSPC
    (as on a full disk, the error names no file)."""
    real_open = builtins.open

    class Full(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, int) or not set(mode) & set("wax+"):
            return real_open(file, mode, *args, **kwargs)
        if not Path(os.path.abspath(file)).is_relative_to(folder):
            return real_open(file, mode, *args, **kwargs)
        raw = Full(file, mode.replace("b", "").replace("t", ""))
        if "b" in mode:
            return io.BufferedWriter(raw)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=kwargs.get("encoding"))

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def _read_only_under(folder: Path, monkeypatch) -> None:
    """Creating a folder under `folder` fails with EROFS, as on a read-only file system
    (chmod would not stop root, which tests may run as)."""
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(os.path.abspath(path)).is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


def _not_writable(folder: Path, monkeypatch) -> None:
    """`folder` answers os.access as a folder we may not write does (chmod would not stop
    root, which tests may run as)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(os.path.abspath(path)) == folder:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


FAULTS = [
    (
        Case(
            "a log folder we may not write: refused before the net is built",
            ("fit", "--config", "{config}"),
            1,
            r"^aspp-seg: error: cannot write trainer.logger save_dir \S*/runs: "
            r"Permission denied$",
        ),
        lambda ws, monkeypatch: _not_writable(ws.work / "runs", monkeypatch),
    ),
    (
        Case(
            "full disk in a resumed fit: the run's checkpoints stay as they were",
            ("fit", "--config", "{config}", "--ckpt_path", "last", "--trainer.max_epochs", "2"),
            1,
            r"^aspp-seg: error: cannot write checkpoint \S*/runs/tiny/version_0/checkpoints/"
            r"\S+\.ckpt: No space left on device$",
            # the run's tables and records; nothing in checkpoints/ (no .ckpt, no .partial)
            writes=(
                *(f"runs/tiny/version_0/*.{kind}" for kind in ("csv", "md", "npy", "png")),
                "runs/tiny/version_0/config.*.yaml",  # the resume's record, not config.yaml
            ),
        ),
        lambda ws, monkeypatch: _full_disk_for_checkpoints(monkeypatch),
    ),
    (
        Case(
            "full disk in validate",
            ("validate", "--config", "{config}", "--ckpt_path", "{ckpt}"),
            1,
            r"^aspp-seg: error: cannot write \S*runs/tiny/version_0/validate/\S+: "
            r"No space left on device$",
        ),
        lambda ws, monkeypatch: _full_disk_under(ws.run / "validate", monkeypatch),
    ),
    (
        Case(
            "read-only log folder in fit",
            ("fit", "--config", "{config}"),
            1,
            r"^aspp-seg: error: cannot create folder \S*runs/tiny/version_1\S*: "
            r"Read-only file system$",
        ),
        lambda ws, monkeypatch: _read_only_under(ws.work / "runs" / "tiny", monkeypatch),
    ),
]


@pytest.mark.parametrize(("case", "fault"), FAULTS, ids=[str(case) for case, _ in FAULTS])
def test_file_system_fault(case, fault, ws, run_cli, monkeypatch):
    fault(ws, monkeypatch)
    check(case, ws, run_cli)
    assert not list(ws.work.rglob("*.partial*")), "a temporary file was left behind"


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from aspp_seg.training.checkpoint_io import SafeCheckpointIO

    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {}, "step": 1}, path)
    before = path.read_bytes()
    _full_disk_for_checkpoints(monkeypatch, room=100)
    with pytest.raises(FileSystemError, match=rf"cannot write checkpoint {path}: No space"):
        SafeCheckpointIO().save_checkpoint({"state_dict": {}, "step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_only_the_modules_default_functions_are_allowed(tmp_path):
    """A module built in Python records its default optimizer and schedule functions as
    hyperparameters: those two load (weights only), nothing beside them."""
    from aspp_seg.evaluation.checkpoints import read_checkpoint
    from aspp_seg.training import module

    defaults = {"optimizer": module.study_sgd, "scheduler": module.poly_schedule}
    torch.save({"state_dict": {}, "hyper_parameters": defaults}, tmp_path / "python.ckpt")
    assert read_checkpoint(tmp_path / "python.ckpt")["hyper_parameters"] == defaults
    for extra in (module.labels_at_size, _System(tmp_path / MARKER)):
        torch.save({"state_dict": {}, "hyper_parameters": {**defaults, "x": extra}},
                   tmp_path / "more.ckpt")  # fmt: skip
        with pytest.raises(ConfigError, match=r"is refused: it asks to load .*(labels_at|posix)"):
            read_checkpoint(tmp_path / "more.ckpt")
    assert not (tmp_path / MARKER).exists()


def test_torchvision_weights_file_is_read_as_data(tmp_path):
    from aspp_seg.models.port import read_torchvision_weights

    weights = tmp_path / "deeplabv3.pth"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(1)}, "x": _Exec(tmp_path / MARKER)},
               weights)  # fmt: skip
    with pytest.raises(ConfigError, match=r"is refused: it asks to load builtins\.exec"):
        read_torchvision_weights(str(weights))
    assert not (tmp_path / MARKER).exists()
