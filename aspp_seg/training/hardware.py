"""Scale and speed: the switches that decide how one training step runs on the hardware.

Each switch takes ``None`` for "automatic", which turns it on only where it is safe and
known to help, ``True`` to insist (an error says why where it cannot work) and
``False`` to switch it off:

- SyncBatchNorm: automatic under multi-process training on GPUs (per-device batches of
  one or two crops make plain BatchNorm statistics noisy); plain BatchNorm on one
  device. PyTorch's SyncBatchNorm does not run on CPU, so CPU DDP (gloo) keeps plain,
  per-process BatchNorm.
- channels_last memory format: automatic on CUDA (tensor cores read NHWC directly) and
  on CPU (oneDNN convolutions skip their layout reorders: measured 7-10% faster
  training steps and 30% faster evaluation here, docs/scaling.md).
- ``torch.compile`` of the network: automatic on CUDA when Triton is installed;
  otherwise the network stays eager and one line says why. On the CPU compiling the
  training step takes minutes and gave no faster step (compiled / eager CPU time
  0.99-1.01 for the study and CamVid recipe nets, fp32 and bf16:
  ``benchmarks/bf16_step.py``), so it is not automatic there.
- fused SGD / Adam(W) kernels: automatic on CUDA.
- gradient checkpointing of the backbone: off unless asked (trades about a third more
  compute for much less activation memory, for full-resolution OS8 training).

The Trainer carries the rest: ``precision`` (``bf16-mixed`` for GPUs in
``configs/trainer/ddp.yaml``; left unset, `aspp_seg.training.precision` chooses
``bf16-mixed`` on a CPU that computes bf16 natively, AVX512-BF16 or AMX, and float32
elsewhere) and ``benchmark: true`` (cudnn.benchmark); Lightning already copies batches
with ``non_blocking=True`` to CUDA, which overlaps with compute when the loader pins memory.

The callbacks `FastPaths` and `LRScaling` apply these; this module imports nothing from
Lightning, so the functions also serve plain PyTorch loops and the benchmarks.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.optim import Optimizer

from aspp_seg.errors import ConfigError

log = logging.getLogger(__name__)

LR_RULES = ("linear", "sqrt", "none")


CHANNELS_LAST_DEVICES = ("cuda", "cpu")
AUTO_DEVICES: dict[str, tuple[str, ...]] = {
    "channels_last": CHANNELS_LAST_DEVICES,
    "compile": ("cuda",),
    "fused_optimizer": ("cuda",),
}
"""Per model switch: the device types where automatic (None) turns it on."""


def want(
    requested: bool | None, *, device_type: str, auto_devices: tuple[str, ...] = ("cuda",)
) -> bool:
    """Resolves a fast-path switch: `requested` when set; automatic (None) is on exactly
    for the device types in `auto_devices` (by default CUDA only)."""
    return device_type in auto_devices if requested is None else requested


# --- SyncBatchNorm ---------------------------------------------------------------------

SYNC_BN_DEVICES = ("cuda", "hpu", "xpu")


def use_sync_batchnorm(requested: bool | None, *, world_size: int, device_type: str) -> bool:
    """Whether to swap BatchNorm for SyncBatchNorm.

    Args:
        requested: ``fast_paths.sync_batchnorm``; None: on when ``world_size > 1`` and the
            devices support it.
        world_size: number of training processes (devices x nodes).
        device_type: ``cuda``, ``cpu``, ...

    Raises:
        ConfigError: when SyncBatchNorm is requested on a device that cannot run it.
    """
    supported = device_type in SYNC_BN_DEVICES
    if requested is None:
        return world_size > 1 and supported
    if requested and not supported and world_size > 1:
        raise ConfigError(
            f"fast_paths.sync_batchnorm=true needs GPUs, but training runs on {device_type!r} "
            "(PyTorch's SyncBatchNorm has no CPU kernel); allowed there: null (auto) or false"
        )
    return requested and world_size > 1


def convert_sync_batchnorm(net: nn.Module) -> nn.Module:
    """Every BatchNorm*d in `net` replaced by SyncBatchNorm sharing its weights and stats.

    Idempotent: a net that already holds SyncBatchNorm layers is returned unchanged.
    """
    if any(isinstance(m, nn.SyncBatchNorm) for m in net.modules()):
        return net
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def count_norm_layers(net: nn.Module) -> dict[str, int]:
    """``{"BatchNorm2d": n, "SyncBatchNorm": m}``: what normalises `net`, for logs and tests."""
    counts: dict[str, int] = {}
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            name = type(module).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


# --- memory format, compile, checkpointing ----------------------------------------------


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """B x C x H x W in NHWC memory order (same shape and values); other ranks unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def compile_support(device_type: str) -> str | None:
    """None when ``torch.compile`` can run on `device_type`, else the reason it cannot."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device_type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:  # pragma: no cover - very old torch
            return "torch.utils._triton is missing"
        if not has_triton():
            return "Triton is not installed (pip install triton) or does not support this GPU"
        return None
    if device_type == "cpu":
        return None  # inductor's C++ backend; needs a working C++ compiler at run time
    return f"torch.compile is not set up for {device_type!r} here"


def compile_net(net: nn.Module, *, device_type: str, mode: str | None = None) -> bool:
    """Compiles `net` in place (``nn.Module.compile``: state_dict keys unchanged).

    Where compile cannot run, logs one line with the reason and leaves `net` eager.
    Errors that only show when the first batch is traced (an unsupported op, a failed
    kernel build) fall back to eager too, with dynamo's own warning, because
    ``torch._dynamo.config.suppress_errors`` is set.

    Returns:
        Whether `net` was compiled.
    """
    reason = compile_support(device_type)
    if reason is not None:
        log.warning("aspp-seg: fast_paths.compile: running eager because %s", reason)
        return False
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    net.compile(mode=mode)
    return True


def enable_grad_checkpointing(net: nn.Module) -> int:
    """Turns on activation checkpointing in every part of `net` that supports it.

    timm backbones (and their ``features_only`` wrappers) recompute each stage's
    activations in the backward pass instead of keeping them.

    Returns:
        How many modules switched it on.

    Raises:
        ConfigError: when no module of `net` supports it.
    """
    switched = 0
    for module in net.modules():
        setter = getattr(module, "set_grad_checkpointing", None)
        if callable(setter):
            setter(True)
            switched += 1
    if not switched:
        raise ConfigError(
            f"fast_paths.grad_checkpointing=true, but {type(net).__name__} has no module with "
            "set_grad_checkpointing (timm backbones have it); set it to false"
        )
    return switched


# --- optimizer --------------------------------------------------------------------------


FUSED_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
"""Optimizers whose ``fused=True`` kernels run on CUDA and CPU alike."""


def fuse_optimizer(optimizer: Optimizer) -> Optimizer:
    """Switches `optimizer` to its fused kernels in place, where torch supports it.

    torch's SGD, Adam and AdamW read ``fused`` from each param group at every step, so
    setting it on the groups (with their own LR, weight decay, ...) of an optimizer that
    has not stepped yet takes the same steps as building it with ``fused=True`` (under
    fp16 AMP the GradScaler then unscales the gradients itself, not inside the kernel).
    Nothing changes for other optimizers, differentiable ones, or parameters on a device
    or of a dtype without fused kernels.

    Returns:
        `optimizer` itself (its groups' ``fused`` says whether it now runs fused).

    Raises:
        ValueError: when the optimizer has already stepped (its state was built unfused).
    """
    if not isinstance(optimizer, FUSED_OPTIMIZERS):
        return optimizer
    if optimizer.state:
        raise ValueError("fuse_optimizer must run before the first optimizer step")
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not all(p.device.type in devices and p.is_floating_point() for p in params):
        return optimizer
    if any(group.get("differentiable") for group in optimizer.param_groups):
        return optimizer
    for settings in (optimizer.defaults, *optimizer.param_groups):
        settings["fused"] = True
        settings["foreach"] = None  # fused and foreach exclude each other
    return optimizer


# --- batch size, learning rate, workers -------------------------------------------------


def scaled_lr(
    base_lr: float, *, global_batch_size: int, base_batch_size: int, rule: str = "linear"
) -> float:
    """The LR for `global_batch_size`, given one tuned for `base_batch_size`.

    ``linear`` (Goyal et al. 2017, for SGD): lr x global / base. ``sqrt`` (for Adam-like
    optimisers): lr x sqrt(global / base). ``none``: unchanged.
    """
    if rule not in LR_RULES:
        raise ConfigError(f"lr rule {rule!r} is not known; allowed: {LR_RULES}")
    ratio = global_batch_size / base_batch_size
    return base_lr * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]
