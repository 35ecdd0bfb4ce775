"""``trainer.deterministic``: what it covers in aspp-seg, and where it cannot work.

With ``seed_everything`` (every config sets it) and ``trainer.deterministic: true`` a
CPU run is bit-for-bit repeatable, metrics included: the confusion matrix is one
`torch.bincount` without weights, which is deterministic (torchmetrics' own confusion
matrix would instead fall back, in deterministic mode, to a pixels x C² one-hot tensor:
gigabytes for one Cityscapes batch).

On CUDA, PyTorch has no deterministic backward for bilinear upsampling
(``F.interpolate``, used for every logit map) nor for adaptive average pooling (ASPP's
image-pooling branch): with ``deterministic: true`` training would stop with a
RuntimeError at the first backward pass. `check_deterministic` says so before
training starts; ``deterministic: warn`` runs everything else deterministically.
"""

from __future__ import annotations

import torch

from aspp_seg.errors import ConfigError


def check_deterministic(trainer) -> None:
    """Raises ConfigError when strict deterministic mode would fail training on CUDA."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    if torch.is_deterministic_algorithms_warn_only_enabled():
        return
    if trainer.strategy.root_device.type == "cuda":
        raise ConfigError(
            "trainer.deterministic=true cannot train on CUDA: bilinear upsampling and "
            "adaptive average pooling (ASPP image pooling) have no deterministic CUDA "
            "backward; use trainer.deterministic: warn (or false)"
        )
