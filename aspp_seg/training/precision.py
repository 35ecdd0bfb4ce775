"""The Trainer's precision when the user did not set one: bf16 autocast on a CPU that
computes bfloat16 natively, Lightning's float32 everywhere else.

A CPU computes bf16 natively when torch reports AVX512-BF16 or AMX-BF16
(``torch.cpu.get_capabilities()``, read by cpuinfo; `NATIVE_BF16`). There oneDNN's bf16
convolutions train the study's ResNet-18 DL-1 in 0.57x and the CamVid recipe's net in
0.55x the float32 CPU time per step (``benchmarks/bf16_step.py``, AVX512-BF16, one
thread). A CPU without those instructions can run bf16 too, but
emulated, so it keeps float32; so do GPUs (their precision comes from the config, e.g.
``configs/trainer/ddp.yaml``), and ARM CPUs, whose bf16 speed is unmeasured here.

Under ``bf16-mixed`` the weights, their gradients, the optimizer state and the EMA stay
float32 (Lightning autocasts the forward only); losses upcast the logits to float32
(`aspp_seg.training.losses`); BatchNorm keeps float32 running statistics with float32
accumulation; the confusion matrices count in int64.

A command on a checkpoint of an earlier run (a resume, ``validate``, ``test``,
``predict``) goes on with the precision that run recorded in its settings file, so a
resume trains on as it started and an evaluation gives the run's own numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from lightning.pytorch.accelerators import (
    Accelerator,
    CPUAccelerator,
    CUDAAccelerator,
    MPSAccelerator,
    XLAAccelerator,
)
from lightning.pytorch.utilities import rank_zero_info

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
"""x86 capabilities (names as ``torch.cpu.get_capabilities()`` gives them) under which
the CPU computes bfloat16 natively."""

AUTO_BF16 = "bf16-mixed"


def native_bf16(capabilities: Mapping[str, object] | None = None) -> list[str]:
    """The native-bf16 capabilities of this CPU (`NATIVE_BF16`), as torch reports them.

    Args:
        capabilities: ``torch.cpu.get_capabilities()``'s mapping; None: this CPU's.
    """
    if capabilities is None:
        capabilities = torch.cpu.get_capabilities()
    return [name for name in NATIVE_BF16 if capabilities.get(name)]


def accelerator_type(accelerator) -> str:
    """``cpu``, ``cuda``, ``mps``, ``tpu``, ... for a ``trainer.accelerator`` setting,
    resolving ``auto`` and ``gpu`` as Lightning does."""
    if isinstance(accelerator, Accelerator):
        return "cpu" if isinstance(accelerator, CPUAccelerator) else type(accelerator).__name__
    name = str(accelerator or "auto")
    if name == "auto":
        if XLAAccelerator.is_available():
            return "tpu"
        name = "gpu" if MPSAccelerator.is_available() or CUDAAccelerator.is_available() else "cpu"
    if name == "gpu":
        return "mps" if MPSAccelerator.is_available() else "cuda"
    return name


def auto_precision(
    device_type: str, capabilities: Mapping[str, object] | None = None
) -> tuple[str | None, str]:
    """(precision, why) for a run on `device_type` whose config sets none; precision None
    leaves Lightning's default (``32-true``)."""
    if device_type != "cpu":
        return None, f"Lightning's default on {device_type}"
    flags = native_bf16(capabilities)
    if flags:
        return AUTO_BF16, f"this CPU computes bfloat16 natively ({', '.join(flags)})"
    missing = " nor ".join(NATIVE_BF16)
    return None, f"this CPU has no native bfloat16 (torch reports neither {missing})"


_UNSET = object()


def recorded_precision(ckpt_path) -> object:
    """The ``trainer.precision`` that the run which wrote `ckpt_path` recorded in its
    settings file (None: Lightning's default); `_UNSET` when there is no such file."""
    from aspp_seg.evaluation.checkpoints import is_file_path, read_checkpoint, run_config

    if not is_file_path(ckpt_path) or not Path(ckpt_path).is_file():
        return _UNSET
    recorded = run_config(ckpt_path, read_checkpoint(ckpt_path))
    if recorded is None:
        return _UNSET
    try:
        settings = yaml.safe_load(recorded.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return _UNSET
    trainer = settings.get("trainer") if isinstance(settings, dict) else None
    if not isinstance(trainer, dict):
        return _UNSET
    return trainer.get("precision")


def choose_precision(config, *, capabilities: Mapping[str, object] | None = None) -> str | None:
    """Sets ``trainer.precision`` of a parsed subcommand config that leaves it unset.

    A run on a checkpoint takes the precision its run recorded; otherwise `auto_precision`
    decides. One line says what was chosen and why, on CPUs (GPU runs are unchanged and
    silent). An explicit ``trainer.precision`` is kept as it is.

    Args:
        config: the parsed subcommand's Namespace (``trainer``, ``ckpt_path``, ...),
            changed in place.
        capabilities: the CPU's, for tests; None: ``torch.cpu.get_capabilities()``.

    Returns:
        The precision the run will use (None: Lightning's default, float32).
    """
    trainer = config["trainer"]
    if trainer.get("precision") is not None:
        return trainer["precision"]
    recorded = recorded_precision(config.get("ckpt_path"))
    if recorded is not _UNSET:
        trainer["precision"] = recorded
        if recorded is not None or accelerator_type(trainer.get("accelerator")) == "cpu":
            rank_zero_info(
                f"aspp-seg: precision {recorded or '32-true'}, as the run of "
                f"{config.get('ckpt_path')} recorded it (--trainer.precision sets another)"
            )
        return recorded
    device_type = accelerator_type(trainer.get("accelerator"))
    precision, why = auto_precision(device_type, capabilities)
    trainer["precision"] = precision
    if device_type == "cpu":
        keep = "; --trainer.precision 32-true keeps float32" if precision else ""
        rank_zero_info(f"aspp-seg: precision {precision or '32-true'}: {why}{keep}")
    if precision == AUTO_BF16:
        # Lightning's model summary warns that it counts mixed precision's weights at 32
        # bits, which is right: they are float32. A warning in every CPU run says nothing.
        warnings.filterwarnings(
            "ignore", message="Precision bf16-mixed is not supported by the model summary"
        )
    return precision
