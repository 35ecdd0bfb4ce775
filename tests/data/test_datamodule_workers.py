import os

from aspp_seg.data.datamodules import DemoDataModule, auto_num_workers


def test_auto_workers_share_the_cores_between_devices():
    cores = len(os.sched_getaffinity(0))
    assert auto_num_workers(1) == max(1, min(8, cores))
    assert auto_num_workers(cores * 4) == 1  # never zero: decoding stays off the main loop


def test_data_module_picks_workers_unless_told(tiny_cityscapes):
    auto = DemoDataModule(str(tiny_cityscapes), num_workers=None)
    auto.setup("validate")
    loader = auto.val_dataloader()
    assert loader.num_workers == auto_num_workers(1)
    assert not loader.pin_memory  # no GPU here: pinned memory would only cost
    fixed = DemoDataModule(str(tiny_cityscapes), num_workers=0)
    fixed.setup("validate")
    assert fixed.val_dataloader().num_workers == 0
