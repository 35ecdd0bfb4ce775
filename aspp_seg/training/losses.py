"""Segmentation losses, chosen in YAML by ``class_path`` and injected into the module.

Every loss is an `nn.Module` called as ``loss(logits, target)`` with B x C x H x W float
logits (any memory format, channels_last included) and B x H x W integer targets in
[0, C) or 255 (`IGNORE_INDEX`), and returns a scalar. Ignored pixels count nowhere. A
batch without a single labelled pixel gives a loss of 0 with zero gradients (torch's
``F.cross_entropy`` would give NaN and poison the weights), and no loss here synchronises
the device with the host.

Losses are computed in float32 whatever the logits' dtype (bf16 / fp16 under autocast).

`class_weights` turns a label histogram into per-class weights for `CrossEntropyLoss`
and `OhemCrossEntropyLoss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.errors import ConfigError

LOVASZ_CLASSES = ("present", "all")
CLASS_WEIGHT_METHODS = ("median_frequency", "inverse_sqrt")


def _weight_buffer(module: nn.Module, weight: Sequence[float] | str | None) -> None:
    """Registers the class weights; a method name (`CLASS_WEIGHT_METHODS`) leaves them to
    be computed from the training split's labels (`set_class_weights`, by ``fit``)."""
    module.weight_method = None
    if isinstance(weight, str):
        if weight not in CLASS_WEIGHT_METHODS:
            raise ConfigError(
                f"weight={weight!r}: a list of floats or one of {CLASS_WEIGHT_METHODS}"
            )
        module.weight_method, weight = weight, None
    if weight is not None:
        if len(weight) == 0 or any(w < 0 for w in weight):
            raise ConfigError(f"weight={list(weight)} must be a non-empty list of floats >= 0")
        weight = torch.tensor(weight, dtype=torch.float32)
    # not persistent: a checkpoint stays loadable whatever loss the next run chooses
    module.register_buffer("weight", weight, persistent=False)


def set_class_weights(module: nn.Module, weights: Sequence[float]) -> None:
    """Gives a loss built with ``weight: <method>`` the weights computed for it."""
    module.weight = torch.tensor(list(weights), dtype=torch.float32, device=_device(module))


def _device(module: nn.Module) -> torch.device:
    tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _check_weight(module: nn.Module, num_classes: int) -> None:
    weight = module.weight
    if weight is None and module.weight_method is not None:
        raise ConfigError(
            f"{type(module).__name__}(weight={module.weight_method!r}): the class weights are "
            "computed from the training split by `aspp-seg fit`; outside fit give a list"
        )
    if weight is not None and weight.numel() != num_classes:
        raise ConfigError(f"weight has {weight.numel()} entries for {num_classes} classes")


def _labelled(target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The denominator of torch's ``mean``: labelled pixels, or their summed class weight."""
    valid = target != IGNORE_INDEX
    if weight is None:
        return valid.sum()
    return torch.where(valid, weight[target.clamp(max=weight.numel() - 1)], 0.0).sum()


def _safe_div(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    # count == 0 only when no pixel is labelled (or all have weight 0): total is 0 then
    return total / count.clamp(min=torch.finfo(torch.float32).tiny)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 logits in float32 for the loss; float32 and float64 as they are
    (a float64 run, e.g. an exact comparison, keeps its precision)."""
    return logits if logits.dtype == torch.float64 else logits.float()


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy, the study's loss: torch's ``F.cross_entropy``.

    The mean over labelled pixels, weighted by the true class's weight when `weight` is
    set (torch's ``reduction="mean"``), 0 for a batch without labelled pixels.

    Args:
        weight: one weight per class; ``median_frequency`` or ``inverse_sqrt``: computed
            from the training split's label histogram by ``aspp-seg fit`` (`class_weights`),
            printed once and written into the run's config.yaml; None: all 1.
        label_smoothing: in [0, 1), as ``F.cross_entropy``'s.
    """

    def __init__(
        self, *, weight: list[float] | str | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={label_smoothing} must lie in [0, 1)")
        _weight_buffer(self, weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """B x C x H x W logits, B x H x W targets (255 = ignore) -> scalar."""
        _check_weight(self, logits.shape[1])
        target = target.long()
        total = F.cross_entropy(
            _upcast(logits),
            target,
            weight=self.weight,
            ignore_index=IGNORE_INDEX,
            reduction="sum",
            label_smoothing=self.label_smoothing,
        )
        return _safe_div(total, _labelled(target, self.weight))


class OhemCrossEntropyLoss(nn.Module):
    """Cross-entropy over the hard pixels only (online hard example mining).

    Which pixels are kept follows mmsegmentation's ``OHEMPixelSampler``:

    - `thresh` set: of the N labelled pixels, those whose softmax probability of the true
      class is below ``max(thresh, p_k)`` are kept, where p_k is the k-th smallest such
      probability (0-based) and ``k = min(min_kept * B, N - 1)``. At least about
      ``min_kept`` pixels per image survive when the network is confident; with
      ``min_kept * B >= N`` every pixel but the most confident one(s) is kept, as there.
    - `thresh` None: the ``min(min_kept * B, N)`` pixels of highest (weighted) loss.

    The loss is the mean cross-entropy of the kept pixels (weighted mean with `weight`).
    mmsegmentation instead divides the kept pixels' summed loss by all B * H * W pixels
    (``avg_non_ignore=False``), which ties the loss scale to the crop size and the share
    of ignored pixels; this is the mean over what is trained on (the usual OHEM loss, as
    in HRNet-Semantic-Segmentation's ``OhemCrossEntropy``).

    Args:
        thresh: probability threshold in (0, 1]; None: keep the top ``min_kept * B``.
            0.7 is mmsegmentation's Cityscapes setting.
        min_kept: pixels kept at least, per image (mmsegmentation's ``min_kept``,
            multiplied by the batch size as there); 100000 of 512 x 1024 is a fifth.
        weight: one weight per class, or a method of `class_weights` (as for
            `CrossEntropyLoss`); None: all 1.
    """

    def __init__(
        self,
        *,
        thresh: float | None = 0.7,
        min_kept: int = 100000,
        weight: list[float] | str | None = None,
    ) -> None:
        super().__init__()
        if thresh is not None and not 0.0 < thresh <= 1.0:
            raise ConfigError(f"thresh={thresh} must lie in (0, 1], or be None (top-k by loss)")
        if min_kept < 1:
            raise ConfigError(f"min_kept={min_kept} must be >= 1")
        self.thresh = thresh
        self.min_kept = min_kept
        _weight_buffer(self, weight)

    @torch.no_grad()
    def hard_pixels(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_loss: torch.Tensor
    ) -> torch.Tensor:
        """B x H x W bool mask of the kept pixels (never an ignored one)."""
        valid = target != IGNORE_INDEX
        count = valid.sum()
        budget = self.min_kept * target.shape[0]
        if self.thresh is None:
            # top-k over all pixels with ignored ones at -inf; k is capped at B*H*W on the
            # host and the ignored ones are masked out again below: no device sync.
            k = min(budget, target.numel())
            scores = torch.where(valid, pixel_loss, -torch.inf).flatten()
            kept = torch.zeros_like(scores, dtype=torch.bool)
            kept[scores.topk(k, sorted=False).indices] = True
            return kept.view_as(target) & valid
        prob = _upcast(logits).softmax(1).gather(1, target.clamp(max=logits.shape[1] - 1)[:, None])
        prob = torch.where(valid, prob[:, 0], torch.inf)  # ignored pixels sort last
        # k-th smallest labelled probability, k = min(budget, N - 1), 0-based
        k = torch.clamp(count - 1, min=0).clamp(max=budget)
        kth = prob.flatten().sort().values[k]
        threshold = torch.clamp(kth, min=self.thresh)
        return valid & (prob < threshold) & (count > 0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """B x C x H x W logits, B x H x W targets (255 = ignore) -> scalar."""
        _check_weight(self, logits.shape[1])
        target = target.long()
        pixel_loss = F.cross_entropy(
            _upcast(logits), target, weight=self.weight, ignore_index=IGNORE_INDEX, reduction="none"
        )
        kept = self.hard_pixels(logits, target, pixel_loss)
        total = torch.where(kept, pixel_loss, 0.0).sum()
        return _safe_div(total, _labelled(torch.where(kept, target, IGNORE_INDEX), self.weight))


def _lovasz_softmax(probs: torch.Tensor, target: torch.Tensor, classes) -> torch.Tensor:
    """Lovász-softmax of each row: G x C x P probabilities, G x P targets -> G losses.

    All classes are sorted at once (one batched sort along the contiguous last axis
    instead of a Python loop over classes). Ignored pixels get error 0 and no
    foreground, so they sort behind every pixel with a positive error and change
    neither the loss nor its gradient: no boolean indexing, no device sync, and the
    per-image case is the same code.
    """
    num_classes = probs.shape[1]
    valid = (target != IGNORE_INDEX)[:, None]  # G x 1 x P
    fg = torch.zeros_like(probs).scatter_(1, target.clamp(max=num_classes - 1)[:, None], 1.0)
    fg = fg * valid
    errors = (fg - probs).abs() * valid
    errors, order = errors.sort(dim=-1, descending=True)
    fg = fg.gather(-1, order)
    # gradient of the Lovász extension of the Jaccard loss (Berman et al., Alg. 1)
    gts = fg.sum(-1, keepdim=True)
    jaccard = 1.0 - (gts - fg.cumsum(-1)) / (gts + (1.0 - fg).cumsum(-1))
    grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
    per_class = (errors * grad).sum(-1)  # G x C
    if classes == "present":
        chosen = (gts[..., 0] > 0).float()
    elif classes == "all":
        chosen = torch.ones_like(per_class)
    else:
        chosen = torch.zeros_like(per_class)
        chosen[:, list(classes)] = 1.0
    # a row with no chosen class (no labelled pixel) has loss 0, as in Berman's code
    return (per_class * chosen).sum(1) / chosen.sum(1).clamp(min=1)


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018).

    A convex surrogate of 1 - IoU on the softmax probabilities, averaged over classes.
    Gives the same values as Berman's reference ``lovasz_softmax`` and
    segmentation_models_pytorch's ``LovaszLoss(mode="multiclass")``, which loop over
    classes in Python; here all classes are sorted at once. Memory: about 4 tensors of
    B * H * W * C elements (float32 and int64), e.g. 1.2 GiB for 8 x 512 x 1024 x 19.

    Args:
        classes: "present": the mean over classes present in the (image's) labels,
            "all": over every class, or a list of class indices.
        per_image: the mean of per-image losses instead of one loss over the batch; an
            image without labelled pixels counts as 0 (Berman's convention).
    """

    def __init__(self, *, classes: str | list[int] = "present", per_image: bool = False) -> None:
        super().__init__()
        if isinstance(classes, str):
            if classes not in LOVASZ_CLASSES:
                raise ConfigError(
                    f"classes={classes!r}: allowed are {LOVASZ_CLASSES} or a list of classes"
                )
        elif len(classes) == 0 or any(c < 0 for c in classes):
            raise ConfigError(f"classes={classes} must be a non-empty list of class indices")
        self.classes = classes if isinstance(classes, str) else list(classes)
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """B x C x H x W logits, B x H x W targets (255 = ignore) -> scalar."""
        num_classes = logits.shape[1]
        if not isinstance(self.classes, str) and max(self.classes) >= num_classes:
            raise ConfigError(f"classes={self.classes} has an index >= {num_classes}")
        probs = _upcast(logits).softmax(1)
        target = target.long()
        if not self.per_image:  # one group: C x (B * H * W)
            probs, target = probs.transpose(0, 1)[None], target[None]
        losses = _lovasz_softmax(
            probs.reshape(*probs.shape[:2], -1), target.reshape(target.shape[0], -1), self.classes
        )
        return losses.mean()


class WeightedSumLoss(nn.Module):
    """``sum_i weights[i] * losses[i](logits, target)``, e.g. cross-entropy + Lovász.

    In YAML::

        loss:
          class_path: aspp_seg.training.losses.WeightedSumLoss
          init_args:
            losses:
              - class_path: aspp_seg.training.losses.CrossEntropyLoss
              - class_path: aspp_seg.training.losses.LovaszSoftmaxLoss
            weights: [1.0, 0.5]

    Args:
        losses: the terms, any losses called as ``loss(logits, target)``.
        weights: one factor per term; None: all 1.
    """

    def __init__(self, *, losses: list[nn.Module], weights: list[float] | None = None) -> None:
        super().__init__()
        if len(losses) == 0:
            raise ConfigError("losses must name at least one loss")
        if weights is None:
            weights = [1.0] * len(losses)
        if len(weights) != len(losses):
            raise ConfigError(f"{len(weights)} weights for {len(losses)} losses")
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """B x C x H x W logits, B x H x W targets (255 = ignore) -> scalar."""
        terms = [
            w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True)
        ]
        return torch.stack(terms).sum()


def class_weights(histogram, method: str = "median_frequency") -> np.ndarray:
    """Per-class loss weights from label counts (ignored pixels not counted).

    ``median_frequency`` is SegNet's median frequency balancing (Badrinarayanan et al.,
    after Eigen and Fergus): ``w_c = median(freq) / freq_c``. With per-image counts
    (N x C), ``freq_c`` is SegNet's exact definition: pixels of class c divided by the
    labelled pixels of the images where c is present, so a class that is rare in the
    data set but large where it occurs (train, bus) is not over-weighted. With one
    histogram (C), which is what a label-count pass usually keeps, it falls back to the
    plain pixel frequency ``count_c / sum(count)``; the two agree when every class
    occurs in every image. The median is over classes with pixels.

    ``inverse_sqrt``: ``w_c = 1 / sqrt(freq_c)`` with the pixel frequency, normalised to
    a mean of 1 over classes with pixels (a milder balance, as in DeepLab-style recipes).

    A class without any pixel gets weight 0: it cannot be trained on, and 0 keeps the
    weights finite (a list with an ``inf`` could not be written to YAML and read back).

    Args:
        histogram: C pixel counts per class, or N x C counts per image.
        method: one of `CLASS_WEIGHT_METHODS`.

    Returns:
        float64[C] weights; ``.tolist()`` gives `CrossEntropyLoss`'s ``weight``.
    """
    if method not in CLASS_WEIGHT_METHODS:
        raise ConfigError(f"method={method!r}: allowed are {CLASS_WEIGHT_METHODS}")
    counts = np.asarray(histogram, dtype=np.float64)
    if counts.ndim not in (1, 2) or counts.shape[-1] == 0 or (counts < 0).any():
        raise ConfigError(f"histogram must be C or N x C counts >= 0, got shape {counts.shape}")
    totals = counts.sum(0) if counts.ndim == 2 else counts
    present = totals > 0
    weights = np.zeros(counts.shape[-1])
    if not present.any():
        return weights
    if method == "median_frequency" and counts.ndim == 2:
        image_pixels = counts.sum(1, keepdims=True)  # N x 1
        seen = (counts > 0) * image_pixels  # labelled pixels of images containing c
        freq = totals[present] / seen.sum(0)[present]
    else:
        freq = totals[present] / totals.sum()
    if method == "median_frequency":
        weights[present] = np.median(freq) / freq
    else:
        inv = 1.0 / np.sqrt(freq)
        weights[present] = inv / inv.mean()
    return weights
