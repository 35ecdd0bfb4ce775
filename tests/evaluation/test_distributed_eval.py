"""Validation counts every image once, whatever the number of processes.

The same untrained network validates the same 8 synthetic frames on 1 process and on
3 processes (DDP, gloo, CPU): Lightning's default DistributedSampler would pad the 8
frames to 9 and count one twice; the unpadded sampler must give the same summed
confusion matrix to the pixel. Run as a script (``torchrun ... this_file root out``),
this file is the 3-process worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from aspp_seg.data.datasets.cityscapes import to_train_ids
from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.data.sampler import UnpaddedDistributedSampler


@pytest.mark.parametrize("size", [1, 8, 500])
@pytest.mark.parametrize("replicas", [1, 2, 3, 7, 8])
def test_sampler_shards_cover_every_index_once(size, replicas):
    shards = [
        list(UnpaddedDistributedSampler(range(size), num_replicas=replicas, rank=r))
        for r in range(replicas)
    ]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    for r, shard in enumerate(shards):
        assert len(shard) == len(
            UnpaddedDistributedSampler(range(size), num_replicas=replicas, rank=r)
        )
    padded = sum(
        len(DistributedSampler(range(size), num_replicas=replicas, rank=r, shuffle=False))
        for r in range(replicas)
    )
    assert padded >= size  # what Lightning's default would count


def _validate(root: str, devices: int, workdir: str) -> np.ndarray | None:
    """Validates a fixed untrained DeepLabV3 on `root`'s val split; rank 0 returns the
    summed confusion matrix (C x C)."""
    from lightning.pytorch import Trainer

    from aspp_seg.data import CityscapesDataModule
    from aspp_seg.models import ASPP, deeplabv3
    from aspp_seg.training.module import SegmentationModule

    torch.manual_seed(0)
    net = deeplabv3(
        num_classes=19,
        backbone="resnet18",
        pretrained=False,
        output_stride=16,
        aspp=partial(ASPP, channels=16),
    )
    module = SegmentationModule(net)
    # Batch 1: each frame's forward pass is the same computation in both runs.
    data = CityscapesDataModule(root, crop_size=None, val_batch_size=1, num_workers=0)
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=workdir,
    )
    trainer.validate(module, datamodule=data, verbose=False)
    if not trainer.is_global_zero:
        return None
    return module.last_result["confusion"].numpy()


def _valid_pixels(root: Path) -> int:
    labels = sorted((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    assert len(labels) % 3 != 0  # otherwise padding would not show
    return sum(int((to_train_ids(np.asarray(Image.open(p))) != IGNORE_INDEX).sum()) for p in labels)


def test_one_and_three_processes_give_the_same_confusion_matrix(tiny_cityscapes, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _validate(str(tiny_cityscapes), 1, str(tmp_path))
    finally:
        torch.set_num_threads(threads)
    assert single.sum() == _valid_pixels(tiny_cityscapes)

    out = tmp_path / "ddp.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3",
         "--master-port", str(29500 + os.getpid() % 1000), __file__, str(tiny_cityscapes),
         str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(out), single)


if __name__ == "__main__":
    torch.set_num_threads(1)
    root_arg, out_arg = sys.argv[1:3]
    confusion = _validate(root_arg, 3, str(Path(out_arg).parent))
    if confusion is not None:
        np.save(out_arg, confusion)
