"""``benchmarks/gpu_train.py`` as a CPU smoke test on a tiny crop: every figure is there
and finite, the ratio is ours / torchvision, and without a GPU it ends with one line."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_train.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_gives_every_figure(script, tmp_path, capsys):
    out = tmp_path / "gpu_train.json"
    tiny_fit = [
        "--data.init_args.root", str(tmp_path / "demo"), "--data.init_args.num_train", "4",
        "--data.init_args.num_val", "2", "--data.init_args.height", "64",
        "--data.init_args.width", "128", "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0", "--model.net.init_args.aspp.init_args.channels",
        "16", "--trainer.callbacks", "[]",
    ]  # fmt: skip
    code = script.main(["--device", "cpu", "--size", "32", "48", "--batch", "2", "--iters", "1",
                        "--warmup", "0", "--compile", "[false]", "--fit_steps", "2",
                        "--fit_args", json.dumps(tiny_fit), "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed[-2000:]
    report = json.loads(out.read_text())
    assert report["torch"] == torch.__version__ and report["device"] == "cpu"
    assert report["device_name"] in printed.splitlines()[0]
    assert list(report["throughput"]) == ["compile off"]  # compile was not asked for
    phase = report["throughput"]["compile off"]
    ours, theirs = phase["rows"][script.OURS], phase["rows"][script.THEIRS]
    for row in (ours, theirs):
        for key in ("train_img_s", "train_ms", "fwd_img_s", "train_mem_mib", "phase_s"):
            assert math.isfinite(row[key]), key
        assert row["train_img_s"] > 0 and "error" not in row
    assert phase["crops_s_ratio"] == pytest.approx(ours["train_img_s"] / theirs["train_img_s"])
    assert f"| off | ours / torchvision | {phase['crops_s_ratio']:.3f}x |" in printed
    # the same ResNet-101 and ASPP; torchvision's head adds a 3x3 256->256 conv and its BN
    assert theirs["params_m"] - ours["params_m"] == pytest.approx((256 * 256 * 9 + 512) / 1e6)
    fit = report["fit"]
    assert fit["steps"] == 2 and math.isfinite(fit["wall_s"]) and 0 <= fit["val_miou"] <= 1
    assert f"val mIoU {fit['val_miou']:.4f}" in printed


def test_without_a_gpu_it_ends_with_one_line(script, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main([]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    (line,) = printed.err.splitlines()
    assert line.startswith("gpu_train.py: error: --device cuda: no CUDA GPU on this machine")
