"""`aspp_seg.training.precision`: bf16-mixed on a CPU with native bf16 when the config sets
no precision, float32 elsewhere, the user's setting and a checkpoint's run kept; and the
float32 parts of a bf16 step (losses, BatchNorm statistics, weights, EMA).

The CPU's capabilities are mocked, so the choice is tested the same on every machine.
"""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from helpers import demo_args
from jsonargparse import Namespace

from aspp_seg.training import precision
from aspp_seg.training.losses import (
    CrossEntropyLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropyLoss,
    WeightedSumLoss,
)
from aspp_seg.training.precision import choose_precision, native_bf16

AVX512_BF16 = {"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
AMX = {"avx512_f": True, "avx512_bf16": False, "amx_bf16": True}
NO_BF16 = {"avx2": True, "avx512_f": True, "avx512_bf16": False}  # AVX-512 alone: emulated


def _config(accelerator="cpu", precision_=None, ckpt_path=None) -> Namespace:
    trainer = Namespace(accelerator=accelerator, precision=precision_)
    return Namespace(trainer=trainer, ckpt_path=ckpt_path)


@pytest.mark.parametrize(
    ("capabilities", "flags"), [(AVX512_BF16, ["avx512_bf16"]), (AMX, ["amx_bf16"]), (NO_BF16, [])]
)
def test_native_bf16_reads_the_capabilities(capabilities, flags):
    assert native_bf16(capabilities) == flags
    assert isinstance(native_bf16(), list)  # this CPU's, as torch reports them


@pytest.mark.parametrize(
    ("capabilities", "accelerator", "asked", "chosen"),
    [
        (AVX512_BF16, "cpu", None, "bf16-mixed"),
        (AMX, "cpu", None, "bf16-mixed"),
        (NO_BF16, "cpu", None, None),  # Lightning's default: float32
        (AVX512_BF16, "cpu", "32-true", "32-true"),  # the user's setting wins
        (NO_BF16, "cpu", "bf16-mixed", "bf16-mixed"),
        (AVX512_BF16, "cuda", None, None),  # GPUs: as before
        (AVX512_BF16, "gpu", None, None),
        (AVX512_BF16, "cuda", "16-mixed", "16-mixed"),
    ],
)
def test_precision_choice(capabilities, accelerator, asked, chosen):
    config = _config(accelerator, asked)
    assert choose_precision(config, capabilities=capabilities) == chosen
    assert config.trainer.precision == chosen


def test_auto_accelerator_follows_what_is_there(monkeypatch):
    from lightning.pytorch.accelerators import CUDAAccelerator

    config = _config("auto")
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert choose_precision(config, capabilities=AVX512_BF16) is None  # a GPU would train
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    config = _config("auto")
    assert choose_precision(config, capabilities=AVX512_BF16) == "bf16-mixed"


def test_one_line_says_what_and_why(caplog):
    with caplog.at_level(logging.INFO):
        choose_precision(_config(), capabilities=AVX512_BF16)
        choose_precision(_config(), capabilities=NO_BF16)
        choose_precision(_config("cuda"), capabilities=AVX512_BF16)  # silent: unchanged
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("aspp-seg")]
    assert lines == [
        "aspp-seg: precision bf16-mixed: this CPU computes bfloat16 natively (avx512_bf16); "
        "--trainer.precision 32-true keeps float32",
        "aspp-seg: precision 32-true: this CPU has no native bfloat16 (torch reports "
        "neither avx512_bf16 nor amx_bf16)",
    ]


@pytest.mark.parametrize(
    ("recorded", "capabilities"), [(None, AVX512_BF16), ("bf16-mixed", NO_BF16)]
)
def test_a_checkpoint_keeps_its_runs_precision(recorded, capabilities, tmp_path):
    """A resume (or an evaluation) of a run goes on in the precision the run recorded,
    also on a CPU that would choose otherwise; an explicit setting still wins."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"precision": recorded}}))
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, ckpt)
    assert choose_precision(_config(ckpt_path=str(ckpt)), capabilities=capabilities) == recorded
    config = _config(precision_="64-true", ckpt_path=str(ckpt))
    assert choose_precision(config, capabilities=capabilities) == "64-true"
    (run / "config.yaml").unlink()  # no recorded settings: chosen as for a new run
    chosen = choose_precision(_config(ckpt_path=str(ckpt)), capabilities=capabilities)
    assert chosen == precision.auto_precision("cpu", capabilities)[0]


LOSSES = [
    CrossEntropyLoss(),
    CrossEntropyLoss(weight=[1.0, 2.0, 0.5, 1.0, 3.0], label_smoothing=0.1),
    OhemCrossEntropyLoss(thresh=0.7, min_kept=20),
    LovaszSoftmaxLoss(),
    WeightedSumLoss(losses=[CrossEntropyLoss(), LovaszSoftmaxLoss()], weights=[1.0, 0.5]),
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda m: repr(m).split("(")[0])
def test_losses_are_float32_under_bf16_autocast(loss):
    """Logits out of a bf16 conv, as a bf16-mixed step gives them: the loss is float32 and
    equals the float32 loss of the same (bf16-rounded) logits."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 6, 7, generator=generator)
    conv = torch.nn.Conv2d(8, 5, 1)
    target = torch.randint(0, 5, (2, 6, 7), generator=generator)
    target[:, 0] = 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(features)
        value = loss(logits, target)
    assert logits.dtype == torch.bfloat16
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(logits.float(), target))
    value.backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()


def test_batchnorm_statistics_stay_float32_under_bf16_autocast():
    """BatchNorm on bf16 activations keeps float32 running statistics, accumulated in
    float32: the same as float32 BatchNorm on those activations."""
    x = (torch.randn(4, 6, 5, 7) * 3 + 50).bfloat16().contiguous(memory_format=torch.channels_last)
    mixed, plain = torch.nn.BatchNorm2d(6, momentum=1.0), torch.nn.BatchNorm2d(6, momentum=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed(x)
    plain(x.float())
    assert mixed.running_mean.dtype == mixed.running_var.dtype == torch.float32
    torch.testing.assert_close(mixed.running_mean, plain.running_mean)
    torch.testing.assert_close(mixed.running_var, plain.running_var)


def test_fit_on_a_native_bf16_cpu(tiny_cityscapes, tmp_path, run_cli, monkeypatch, recwarn, caplog):
    """A demo fit where the CPU reports native bf16 and the config sets no precision
    trains bf16-mixed, records it, and keeps the weights and the EMA in float32."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: AVX512_BF16)
    callbacks = tmp_path / "ema.yaml"
    callbacks.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: aspp_seg.training.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true}\n"
        "    - class_path: aspp_seg.training.callbacks.EMA\n"
        "      init_args: {decay: 0.5}\n"
    )
    caplog.set_level(logging.INFO)
    result = run_cli(
        "fit", *demo_args(tiny_cityscapes, "--trainer.accelerator", "cpu",
                          "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                          "--trainer.num_sanity_val_steps", "0", configs=[callbacks]),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "aspp-seg: precision bf16-mixed: this CPU computes bfloat16 natively" in caplog.text
    assert not [w for w in recwarn if "not supported by the model summary" in str(w.message)]
    (config,) = tmp_path.rglob("config.yaml")
    assert yaml.safe_load(config.read_text())["trainer"]["precision"] == "bf16-mixed"
    (last,) = tmp_path.rglob("last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)
    for name in ("state_dict", "current_model_state"):  # the average, the live weights
        floats = {v.dtype for v in state[name].values() if v.is_floating_point()}
        assert floats == {torch.float32}, name


def test_bf16_step_benchmark_runs_on_a_tiny_batch(monkeypatch, capsys):
    """``benchmarks/bf16_step.py`` (eager only: compiling takes minutes) prints a ratio
    per net that follows from its step times."""
    import importlib.util
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))  # it imports train_throughput
    spec = importlib.util.spec_from_file_location("bf16_step", benchmarks / "bf16_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(compile=[False], batch=2, height=32, width=48, warmup=0, rounds=1)
    printed = capsys.readouterr().out
    assert set(result) == {"study", "recipe"} and "native bf16" in printed
    for net, rows in result.items():
        ratio = rows["bf16"]["step_s"] / rows["fp32"]["step_s"]
        assert f"{net}: bf16 / fp32 step time: {ratio:.3f} wall" in printed
