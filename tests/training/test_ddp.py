"""Two-process DDP training on CPU (gloo) through the `aspp-seg fit` command.

The run uses the shipped preset ``configs/trainer/ddp.yaml`` with CPU overrides. A
probe callback (below, imported by the training processes from this file) records on
every rank what it trained on and a hash of its parameters at the end.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from aspp_seg.training.hardware import count_norm_layers

REPO = Path(__file__).resolve().parents[2]


def param_digest(named: list[tuple[str, torch.Tensor]]) -> str:
    """sha256 over names and exact float bytes of parameters, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankProbe(Callback):
    """Writes ``rank{N}.json`` per process: names of trained frames, steps, parameter hash."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.names: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.names.extend(batch["name"])

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "names": self.names,
            "params": param_digest(list(pl_module.net.named_parameters())),
            "norms": sorted(count_norm_layers(pl_module.net)),
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def run_group(args: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs `args` in its own process group; on a timeout (a DDP deadlock) the launcher
    and every rank it started are killed, and the test fails with their output."""
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, **kwargs,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"DDP training hung for {timeout} s (a collective on one rank only?)\n"
                    f"{stderr[-4000:]}")  # fmt: skip
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.mark.slow  # two processes of Lightning's DDP on 2 cores: 45 s idle, 200 s beside a training
def test_two_process_ddp_on_cpu_keeps_replicas_identical(tiny_cityscapes, tmp_path):
    probe_dir = tmp_path / "probe"
    args = [
        sys.executable, "-m", "aspp_seg.cli", "fit",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(REPO / "configs" / "trainer" / "ddp.yaml"),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
        "--trainer.precision", "32",
        "--trainer.max_epochs", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks+=test_ddp.RankProbe",
        f"--trainer.callbacks.out_dir={probe_dir}",
        "--data.init_args.root", str(tiny_cityscapes),
        "--data.init_args.batch_size", "2",
        "--data.init_args.val_batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.aspp.init_args.channels", "16",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), str(REPO)]),
    }
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small shared CPU
    result = run_group(args, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 16 training frames, 2 processes x 2 crops per step: 4 steps, each rank sees half.
    for rank in ranks:
        assert rank["world_size"] == 2 and rank["global_step"] == 4
        assert len(rank["names"]) == 8
        assert "SyncBatchNorm" not in rank["norms"]  # SyncBatchNorm has no CPU kernel: plain BN
    assert not set(ranks[0]["names"]) & set(ranks[1]["names"])  # a real split, not a copy
    assert ranks[0]["params"] == ranks[1]["params"]
    assert "plain BatchNorm per process (2 processes on cpu" in result.stdout + result.stderr

    # One writer: one run folder, one checkpoint set, each step logged once.
    runs = sorted((tmp_path / "runs" / "demo").iterdir())
    assert [r.name for r in runs] == ["version_0"]
    checkpoints = sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
    assert checkpoints[-1] == "last.ckpt" and len(checkpoints) == 2
    with (runs[0] / "metrics.csv").open() as f:
        steps = [row["step"] for row in csv.DictReader(f) if row.get("train/loss")]
    assert sorted(map(int, steps)) == [0, 1, 2, 3]
    state = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    saved = [
        (key.removeprefix("net."), value)
        for key, value in state.items()
        if key.startswith("net.") and not key.endswith(buffers)
    ]
    assert param_digest(saved) == ranks[0]["params"]  # the checkpoint holds the trained weights

    # Two processes predict a folder of 7 images (odd: no even split): every image is
    # written, none twice (a padded sampler would repeat one; the line sums the ranks).
    source = tmp_path / "predict_source"
    source.mkdir()
    for image in sorted((tiny_cityscapes / "leftImg8bit" / "val").rglob("*.png"))[:7]:
        (source / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "predictions"
    predict = [
        sys.executable, "-m", "aspp_seg.cli", "predict",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--ckpt_path", str(runs[0] / "checkpoints" / "last.ckpt"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--data.init_args.root", str(tiny_cityscapes),
        "--data.init_args.predict_source", str(source),
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.aspp.init_args.channels", "16",
        "--predict_dir", str(out),
    ]  # fmt: skip
    result = run_group(predict, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"wrote predictions of 7 images to {out}" in result.stdout
    written = sorted(p.name for p in (out / "trainIds").iterdir())
    assert written == sorted(p.name for p in source.iterdir())
