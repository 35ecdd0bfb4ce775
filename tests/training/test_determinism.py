"""Seeds and ``trainer.deterministic``: repeatable runs, and a metric path that works
(and stays small) in deterministic mode."""

from __future__ import annotations

import csv
import resource
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import demo_args

from aspp_seg.cli.main import main
from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.confusion import ConfusionMatrix
from aspp_seg.training.determinism import check_deterministic


@pytest.fixture
def restore_deterministic():
    """Lightning sets the global flag; put it back for the other tests."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)


def _fit(root: Path, folder: Path, seed: int) -> Path:
    """Three training steps and one validation batch of the demo config."""
    main(["fit", *demo_args(root, "--seed_everything", str(seed),
          "--trainer.deterministic", "true",
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
          "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
          "--trainer.logger.init_args.save_dir", str(folder))])  # fmt: skip
    return folder / "demo" / "version_0"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)["state_dict"]  # fmt: skip


def _losses(run: Path) -> list[str]:
    with (run / "metrics.csv").open() as f:
        return [row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.slow  # two trainings through the CLI; the fast variant is below
def test_seeded_deterministic_runs_are_identical(tiny_cityscapes, tmp_path, restore_deterministic):
    first = _fit(tiny_cityscapes, tmp_path / "a", seed=0)
    assert torch.are_deterministic_algorithms_enabled()  # the option reached torch
    second = _fit(tiny_cityscapes, tmp_path / "b", seed=0)

    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = _losses(first)
    assert len(losses) == 3 and len(set(losses)) == 3  # it trained: the loss moved
    assert _losses(second) == losses
    assert (first / "val_iou.csv").read_text() == (second / "val_iou.csv").read_text()


def _two_steps(seed: int) -> dict[str, torch.Tensor]:
    """Two SGD steps of a small DeepLabV3 from a seeded init on seeded random data."""
    from lightning.pytorch import seed_everything

    from aspp_seg.models import ASPP, deeplabv3

    seed_everything(seed, verbose=False)
    net = deeplabv3(backbone="resnet10t", pretrained=False, num_classes=5,
                    aspp=partial(ASPP, channels=8))  # fmt: skip
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        images = torch.randn(2, 3, 32, 32)
        masks = torch.randint(0, 5, (2, 32, 32))
        loss = torch.nn.functional.cross_entropy(net(images)["out"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_seeded_steps_are_identical_in_deterministic_mode(restore_deterministic):
    torch.use_deterministic_algorithms(True)
    first, second, other = _two_steps(0), _two_steps(0), _two_steps(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_confusion_matrix_in_deterministic_mode(restore_deterministic):
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 19, (2, 256, 512), generator=generator)
    target = torch.randint(0, 19, (2, 256, 512), generator=generator)
    target[:, :16] = 255  # ignored rows
    reference = np.zeros((19, 19), dtype=np.int64)
    keep = target != 255
    np.add.at(reference, (target[keep].numpy(), pred[keep].numpy()), 1)

    torch.use_deterministic_algorithms(True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    metric = ConfusionMatrix(19)
    metric.update(pred, target)
    counts = metric.compute()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert np.array_equal(counts.numpy(), reference)
    # torchmetrics' deterministic fallback would build a 262144 x 361 int64 tensor
    # (~720 MiB) for this batch; the bincount path needs a few MiB.
    assert grown_mib < 200


def test_strict_deterministic_mode_is_refused_on_cuda(restore_deterministic):
    cuda = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    cpu = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    torch.use_deterministic_algorithms(True)
    with pytest.raises(ConfigError, match="deterministic: warn"):
        check_deterministic(cuda)
    check_deterministic(cpu)
    torch.use_deterministic_algorithms(True, warn_only=True)
    check_deterministic(cuda)  # "warn" runs the few ops without a deterministic kernel
