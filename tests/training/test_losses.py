import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aspp_seg.training.losses import (
    CrossEntropyLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropyLoss,
    WeightedSumLoss,
    class_weights,
)

IGNORE = 255


def _logits_with_true_probs(probs: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """1 x 2 x 1 x (N + 1) logits whose softmax gives class 0 the probabilities `probs`,
    all labelled 0, and one more pixel labelled 255 with a huge logit."""
    p = torch.tensor(probs, dtype=torch.float64)
    logits = torch.stack([p.log(), (1 - p).log()])  # 2 x N
    logits = torch.cat([logits, torch.tensor([[50.0], [-50.0]], dtype=torch.float64)], 1)
    target = torch.tensor([0] * len(probs) + [IGNORE])
    return logits[None, :, None].float(), target[None, None]


def _random_batch(seed=0, shape=(2, 5, 6, 7), ignore=0.2):
    generator = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    logits = 3 * torch.randn(shape, generator=generator)
    target = torch.randint(0, c, (b, h, w), generator=generator)
    target[torch.rand(target.shape, generator=generator) < ignore] = IGNORE
    return logits, target


ALL_LOSSES = [
    CrossEntropyLoss(),
    CrossEntropyLoss(weight=[0.5, 1.0, 2.0, 1.0, 3.0], label_smoothing=0.1),
    OhemCrossEntropyLoss(thresh=0.7, min_kept=10),
    OhemCrossEntropyLoss(thresh=None, min_kept=10, weight=[1.0, 2.0, 1.0, 1.0, 1.0]),
    LovaszSoftmaxLoss(),
    LovaszSoftmaxLoss(classes="all", per_image=True),
    WeightedSumLoss(losses=[CrossEntropyLoss(), LovaszSoftmaxLoss()], weights=[1.0, 0.5]),
]


# ----------------------------------------------------------------- cross-entropy


def test_cross_entropy_hand_values():
    # uniform logits over 4 classes: -log(1/4) at each labelled pixel
    logits = torch.zeros(1, 4, 2, 2)
    target = torch.tensor([[[0, 3], [IGNORE, 1]]])
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(math.log(4))
    # weighted mean: pixels of class 0 (p=0.5, weight 3) and class 1 (p=0.25, weight 1)
    logits = torch.tensor([0.5, 0.25, 0.25]).log()[None, :, None, None].expand(1, 3, 1, 3)
    target = torch.tensor([[[0, 1, IGNORE]]])
    loss = CrossEntropyLoss(weight=[3.0, 1.0, 1.0])(logits.contiguous(), target)
    assert loss.item() == pytest.approx((3 * math.log(2) + math.log(4)) / 4)


@pytest.mark.parametrize("weight", [None, [0.5, 1.0, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_equals_torch(weight, smoothing):
    logits, target = _random_batch()
    expected = F.cross_entropy(
        logits,
        target,
        weight=None if weight is None else torch.tensor(weight),
        ignore_index=IGNORE,
        label_smoothing=smoothing,
    )
    loss = CrossEntropyLoss(weight=weight, label_smoothing=smoothing)(logits, target)
    torch.testing.assert_close(loss, expected)


def test_cross_entropy_rejects_bad_settings():
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="weight"):
        CrossEntropyLoss(weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="3 entries for 5 classes"):
        CrossEntropyLoss(weight=[1.0, 1.0, 1.0])(*_random_batch())


# -------------------------------------------------------------------------- OHEM


def _ohem_reference(logits, target, thresh, min_kept):
    """mmsegmentation's OHEMPixelSampler + mean CE of the kept pixels, pixel by pixel."""
    b, _, h, w = logits.shape
    pixels = []  # (probability of the true class, CE)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                label = int(target[i, y, x])
                if label == IGNORE:
                    continue
                row = [float(v) for v in logits[i, :, y, x]]
                top = max(row)
                log_z = top + math.log(sum(math.exp(v - top) for v in row))
                pixels.append((math.exp(row[label] - log_z), log_z - row[label]))
    if not pixels:
        return 0.0
    budget = min_kept * b
    if thresh is None:
        kept = sorted(pixels, key=lambda p: -p[1])[:budget]
    else:
        probs = sorted(p for p, _ in pixels)
        threshold = max(probs[min(budget, len(probs) - 1)], thresh)
        kept = [p for p in pixels if p[0] < threshold]
    return sum(ce for _, ce in kept) / len(kept) if kept else 0.0


def test_ohem_hand_values():
    logits, target = _logits_with_true_probs([0.9, 0.6, 0.3, 0.8])
    ce = {p: -math.log(p) for p in (0.9, 0.6, 0.3, 0.8)}
    # sorted probabilities 0.3 0.6 0.8 0.9; min_kept 1 -> p_1 = 0.6 < 0.7: keeps 0.6, 0.3
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=1)(logits, target)
    assert loss.item() == pytest.approx((ce[0.6] + ce[0.3]) / 2, rel=1e-5)
    # min_kept 2 -> p_2 = 0.8 > 0.7: the threshold rises to 0.8, keeps 0.3 and 0.6 only
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=2)(logits, target)
    assert loss.item() == pytest.approx((ce[0.6] + ce[0.3]) / 2, rel=1e-5)
    # min_kept 3 -> p_3 = 0.9: keeps all below 0.9
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=3)(logits, target)
    assert loss.item() == pytest.approx((ce[0.3] + ce[0.6] + ce[0.8]) / 3, rel=1e-5)
    # min_kept beyond the 4 labelled pixels: mmseg's index min(k, N - 1) keeps all but
    # the most confident one; the ignored pixel is never counted
    loss = OhemCrossEntropyLoss(thresh=0.7, min_kept=1000)(logits, target)
    assert loss.item() == pytest.approx((ce[0.3] + ce[0.6] + ce[0.8]) / 3, rel=1e-5)
    # a low threshold: every pixel above p_1 dropped; thresh 1.0 keeps all but p = 1
    loss = OhemCrossEntropyLoss(thresh=0.1, min_kept=1)(logits, target)
    assert loss.item() == pytest.approx((ce[0.3]), rel=1e-5)
    loss = OhemCrossEntropyLoss(thresh=1.0, min_kept=1)(logits, target)
    assert loss.item() == pytest.approx(sum(ce.values()) / 4, rel=1e-5)
    # thresh None: the two highest losses
    loss = OhemCrossEntropyLoss(thresh=None, min_kept=2)(logits, target)
    assert loss.item() == pytest.approx((ce[0.6] + ce[0.3]) / 2, rel=1e-5)
    loss = OhemCrossEntropyLoss(thresh=None, min_kept=50)(logits, target)
    assert loss.item() == pytest.approx(sum(ce.values()) / 4, rel=1e-5)


@pytest.mark.parametrize("thresh", [None, 0.3, 0.7, 0.95])
@pytest.mark.parametrize("min_kept", [1, 7, 40, 10_000])
def test_ohem_matches_a_pixel_loop(thresh, min_kept):
    logits, target = _random_batch(seed=min_kept)
    loss = OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept)(logits, target)
    expected = _ohem_reference(logits, target, thresh, min_kept)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_batch_budget_is_min_kept_per_image():
    # mmseg keeps min_kept * B: the same pixels twice in a batch of 2 keep twice as many
    logits, target = _logits_with_true_probs([0.9, 0.6, 0.3, 0.8])
    ohem = OhemCrossEntropyLoss(thresh=0.01, min_kept=2)
    single = ohem(logits, target)  # p_2 = 0.8: keeps 0.3 and 0.6
    double = ohem(logits.repeat(2, 1, 1, 1), target.repeat(2, 1, 1))  # p_4 = 0.8 again
    torch.testing.assert_close(single, double)
    loss = OhemCrossEntropyLoss(thresh=0.01, min_kept=1)(
        logits.repeat(2, 1, 1, 1), target.repeat(2, 1, 1)
    )
    assert loss.item() == pytest.approx(-math.log(0.3), rel=1e-5)  # p_2 of 8 is 0.6


def test_ohem_rejects_bad_settings():
    with pytest.raises(ValueError, match="thresh"):
        OhemCrossEntropyLoss(thresh=0.0)
    with pytest.raises(ValueError, match="min_kept"):
        OhemCrossEntropyLoss(min_kept=0)


# ------------------------------------------------------------------------ Lovász


def _lovasz_reference(probas, labels, classes="present"):
    """Berman's ``lovasz_softmax_flat`` (github.com/bermanmaxim/LovaszSoftmax), re-typed:
    P x C probabilities of labelled pixels, P labels."""
    if probas.numel() == 0:
        return 0.0
    losses = []
    for c in range(probas.shape[1]) if classes in ("all", "present") else classes:
        fg = (labels == c).double()
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c].double()).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        gt_sorted = fg[perm]
        gts = gt_sorted.sum()
        intersection = gts - gt_sorted.cumsum(0)
        union = gts + (1 - gt_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
        losses.append(float(torch.dot(errors_sorted, jaccard)))
    return sum(losses) / len(losses)


def _flat(logits, target):
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    valid = target.flatten() != IGNORE
    return probs[valid], target.flatten()[valid]


def test_lovasz_hand_values():
    # two labelled pixels: (p0, p1) = (0.8, 0.2) labelled 0 and (0.4, 0.6) labelled 1.
    # class 0: errors 0.2, 0.4 -> sorted 0.4 (bg), 0.2 (fg), grad 1/2, 1/2 -> 0.3;
    # class 1: errors 0.2, 0.4 -> sorted 0.4 (fg), 0.2 (bg), grad 1, 0 -> 0.4
    probs = torch.tensor([[0.8, 0.4, 0.1], [0.2, 0.6, 0.9]])
    logits = probs.log()[None, :, None]  # 1 x 2 x 1 x 3
    target = torch.tensor([[[0, 1, IGNORE]]])
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(0.35, rel=1e-6)
    assert LovaszSoftmaxLoss(classes=[1])(logits, target).item() == pytest.approx(0.4, rel=1e-6)
    # a perfect prediction has no loss
    perfect = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])
    assert LovaszSoftmaxLoss()(perfect, torch.tensor([[[0, 1]]])).item() < 1e-6


@pytest.mark.parametrize("classes", ["present", "all", [0, 3]])
def test_lovasz_matches_berman_reference(classes):
    logits, target = _random_batch(seed=3)
    target[0, :2] = 2  # class 4 absent from some images, class 2 frequent
    target[target == 4] = 1
    loss = LovaszSoftmaxLoss(classes=classes)(logits, target)
    assert loss.item() == pytest.approx(_lovasz_reference(*_flat(logits, target), classes))
    per_image = LovaszSoftmaxLoss(classes=classes, per_image=True)(logits, target)
    expected = np.mean(
        [
            _lovasz_reference(*_flat(lg[None], t[None]), classes)
            for lg, t in zip(logits, target, strict=True)
        ]
    )
    assert per_image.item() == pytest.approx(expected)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_segmentation_models_pytorch(per_image):
    from segmentation_models_pytorch import losses as smp_losses  # dev extra

    logits, target = _random_batch(seed=5, shape=(3, 6, 9, 11))
    reference = smp_losses.LovaszLoss("multiclass", per_image=per_image, ignore_index=IGNORE)
    loss = LovaszSoftmaxLoss(per_image=per_image)(logits, target)
    torch.testing.assert_close(loss, reference(logits, target))
    # and the gradient: ignored pixels moved to the end of the sort change nothing
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    LovaszSoftmaxLoss(per_image=per_image)(ours, target).backward()
    reference(theirs, target).backward()
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_lovasz_rejects_bad_classes():
    with pytest.raises(ValueError, match="present"):
        LovaszSoftmaxLoss(classes="some")
    with pytest.raises(ValueError, match=">= 5"):
        LovaszSoftmaxLoss(classes=[0, 5])(*_random_batch())


# ------------------------------------------------------------------ every loss


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda m: repr(m).split("(")[0])
def test_ignored_pixels_are_ignored_and_gradients_finite(loss):
    logits, target = _random_batch(seed=7)
    other = logits.clone()
    other[(target == IGNORE)[:, None].expand_as(other)] = 1e4  # garbage where ignored
    torch.testing.assert_close(loss(logits, target), loss(other, target))
    logits.requires_grad_()
    loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum() > 0).item()
    ignored = (target == IGNORE)[:, None].expand_as(logits)
    assert (logits.grad[ignored] == 0).all()


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda m: repr(m).split("(")[0])
def test_channels_last_and_half_precision_inputs(loss):
    logits, target = _random_batch(seed=8)
    expected = loss(logits, target)
    channels_last = logits.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(loss(channels_last, target), expected)
    torch.testing.assert_close(loss(logits, target.to(torch.uint8)), expected)
    low = loss(logits.bfloat16(), target)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(expected.item(), rel=0.05)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda m: repr(m).split("(")[0])
def test_no_labelled_pixel_gives_zero_not_nan(loss):
    logits = torch.randn(2, 5, 3, 4, requires_grad=True)
    value = loss(logits, torch.full((2, 3, 4), IGNORE))
    value.backward()
    assert value.item() == 0.0
    assert (logits.grad == 0).all()


def test_weighted_sum_adds_weighted_terms():
    logits, target = _random_batch(seed=9)
    ce, lovasz = CrossEntropyLoss(), LovaszSoftmaxLoss()
    loss = WeightedSumLoss(losses=[ce, lovasz], weights=[1.0, 0.25])(logits, target)
    torch.testing.assert_close(loss, ce(logits, target) + 0.25 * lovasz(logits, target))
    with pytest.raises(ValueError, match="2 weights for 1 losses"):
        WeightedSumLoss(losses=[ce], weights=[1.0, 2.0])


def test_losses_are_built_from_yaml():
    from jsonargparse import ArgumentParser
    from torch import nn

    parser = ArgumentParser()
    parser.add_argument("--loss", type=nn.Module)
    config = parser.parse_string(
        """
        loss:
          class_path: aspp_seg.training.losses.WeightedSumLoss
          init_args:
            losses:
              - class_path: aspp_seg.training.losses.OhemCrossEntropyLoss
                init_args: {thresh: 0.7, min_kept: 100000, weight: [1.0, 2.0]}
              - class_path: aspp_seg.training.losses.LovaszSoftmaxLoss
                init_args: {classes: [0, 1], per_image: true}
            weights: [1.0, 0.5]
        """
    )
    loss = parser.instantiate_classes(config).loss
    assert isinstance(loss, WeightedSumLoss) and loss.weights == [1.0, 0.5]
    ohem, lovasz = loss.losses
    assert ohem.thresh == 0.7 and ohem.weight.tolist() == [1.0, 2.0]
    assert lovasz.classes == [0, 1] and lovasz.per_image
    assert "weight" not in loss.state_dict()  # checkpoints do not depend on the loss


# ---------------------------------------------------------------- class weights


def test_class_weights_from_a_pixel_histogram():
    # frequencies 0.6, 0.3, 0.1; median 0.3; class 3 has no pixel
    weights = class_weights([60, 30, 10, 0], "median_frequency")
    np.testing.assert_allclose(weights, [0.5, 1.0, 3.0, 0.0])
    inv = 1 / np.sqrt([0.6, 0.3, 0.1])
    weights = class_weights(np.array([60, 30, 10, 0]), "inverse_sqrt")
    np.testing.assert_allclose(weights, [*(inv / inv.mean()), 0.0])
    assert weights[:3].mean() == pytest.approx(1.0)


def test_median_frequency_with_per_image_counts_is_segnets():
    # image 1: 50 px class 0, 10 px class 2; image 2: 10 px class 0, 30 px class 1
    # freq: class 0 60/100, class 1 30/40 (only image 2), class 2 10/60 (only image 1)
    counts = np.array([[50, 0, 10], [10, 30, 0]])
    weights = class_weights(counts, "median_frequency")
    np.testing.assert_allclose(weights, [1.0, 0.6 / 0.75, 0.6 * 6])
    np.testing.assert_allclose(
        class_weights(counts, "inverse_sqrt"), class_weights([60, 30, 10], "inverse_sqrt")
    )


def test_class_weights_edge_cases():
    np.testing.assert_array_equal(class_weights([0, 0], "inverse_sqrt"), [0.0, 0.0])
    with pytest.raises(ValueError, match="median_frequency"):
        class_weights([1, 2], "inverse")
    with pytest.raises(ValueError, match="counts"):
        class_weights([[[1]]], "inverse_sqrt")
    weights = class_weights(torch.tensor([5, 5]), "median_frequency")
    assert CrossEntropyLoss(weight=weights.tolist()).weight.tolist() == [1.0, 1.0]
