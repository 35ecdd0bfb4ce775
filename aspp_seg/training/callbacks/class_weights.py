"""Class weights computed from the training split, for losses given ``weight: <method>``.

    model:
      loss:
        class_path: aspp_seg.training.losses.CrossEntropyLoss
        init_args: {weight: median_frequency}    # or inverse_sqrt, or a list

``aspp-seg fit`` (the `ClassWeights` callback, after the data is prepared and before it is
set up, so a generated or regenerated demo set counts its new files) reads every label
of the split the run trains on once (decoded as training reads it), counts
the pixels of each class per image, turns the counts into weights
(`aspp_seg.training.losses.class_weights`), prints them once and writes them into the run's
``config.yaml`` in place of the method's name, so the run says what it trained with and
its config reproduces it without the counting pass.
"""

from __future__ import annotations

import os

import numpy as np
from lightning.pytorch import Callback
from torch import nn

from aspp_seg.data.dataset import Sample
from aspp_seg.data.io import read_label
from aspp_seg.training.losses import class_weights, set_class_weights


def _counts(args: tuple[Sample, int]) -> np.ndarray:
    sample, num_classes = args
    classes = sample.encoding.decode(read_label(sample.label), sample.label)
    return np.bincount(classes.ravel(), minlength=256)[:num_classes]


def label_histogram(samples: list[Sample], num_classes: int) -> np.ndarray:
    """N x C pixel counts per training image and class (ignored pixels not counted)."""
    from aspp_seg.data.parallel import parallel_map

    if not samples:
        return np.zeros((0, num_classes), dtype=np.int64)
    workers = min(8, os.cpu_count() or 1)
    items = [(sample, num_classes) for sample in samples]
    # completion order does not matter: the weights use column sums and per-row presence
    rows = list(parallel_map(_counts, items, workers=workers, desc="class histogram"))
    return np.stack(rows).astype(np.int64)


def losses_wanting_weights(loss: nn.Module) -> list[nn.Module]:
    """The loss modules (also inside a weighted sum) built with ``weight: <method>``."""
    return [m for m in loss.modules() if getattr(m, "weight_method", None) and m.weight is None]


def resolve_class_weights(loss: nn.Module, datamodule, class_names) -> dict[str, list[float]]:
    """Computes and sets the weights every such loss asked for.

    Args:
        loss: the module's loss.
        datamodule: the training data (an `aspp_seg` data module: ``scan_training``).
        class_names: the C classes, for the printed table.

    Returns:
        ``{method: weights}`` for each method used (empty when none was asked for).
    """
    wanting = losses_wanting_weights(loss)
    if not wanting:
        return {}
    num_classes = len(class_names)
    histogram = label_histogram(datamodule.scan_training().raise_first(), num_classes)
    computed = {}
    for module in wanting:
        method = module.weight_method
        if method not in computed:
            computed[method] = [round(float(w), 6) for w in class_weights(histogram, method)]
        set_class_weights(module, computed[method])
    for method, weights in computed.items():
        pairs = ", ".join(f"{name} {w:.3f}" for name, w in zip(class_names, weights, strict=True))
        print(f"aspp-seg: class weights ({method}, {len(histogram)} training images): {pairs}")
    return computed


def write_into_config(loss_config, computed: dict[str, list[float]]) -> None:
    """Replaces ``weight: <method>`` by the computed list everywhere in a parsed
    ``model.loss`` config (a jsonargparse Namespace, nested through weighted sums)."""
    if isinstance(loss_config, list):
        for item in loss_config:
            write_into_config(item, computed)
        return
    if not hasattr(loss_config, "items"):
        return
    for key, value in list(loss_config.items()):
        if key.endswith("weight") and isinstance(value, str) and value in computed:
            loss_config[key] = computed[value]
        elif hasattr(value, "items") or isinstance(value, list):
            write_into_config(value, computed)


class ClassWeights(Callback):
    """Computes the class weights that the loss asked for (``weight: <method>``) from the
    training split, once the data is prepared, and writes them into `loss_config` (the
    run config that `RunConfigCallback` then saves). The CLI puts it first among the
    callbacks, so its ``setup`` runs before the config is saved.

    Args:
        loss_config: the parsed ``model.loss`` of the run's config, changed in place;
            None: only the loss is set.
    """

    def __init__(self, loss_config=None) -> None:
        self.loss_config = loss_config

    def setup(self, trainer, pl_module, stage: str) -> None:
        loss = getattr(pl_module, "loss", None)
        datamodule = trainer.datamodule
        if stage != "fit" or loss is None or not hasattr(datamodule, "scan_training"):
            return
        computed = resolve_class_weights(loss, datamodule, pl_module.class_names)
        if computed and self.loss_config is not None:
            write_into_config(self.loss_config, computed)
