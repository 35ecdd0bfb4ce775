"""Loader and augmentation settings are checked in the data module's constructor."""

from __future__ import annotations

from pathlib import Path

import pytest

from aspp_seg.data import CamVidDataModule, CityscapesDataModule, DemoDataModule
from aspp_seg.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("batch_size", "0", "data.batch_size=0 must be an integer >= 1"),
        ("num_workers", "-1", "data.num_workers=-1 must be an integer >= 0 or null"),
        ("crop_size", "[0, 64]", "data.crop_size=[0, 64] must be [height, width]"),
    ],
)
def test_cli_names_the_setting_in_one_line(tmp_path, run_cli, flag, value, needle):
    result = run_cli("fit", "--config", str(REPO / "configs" / "demo.yaml"),
                     "--data.init_args.root", str(tmp_path / "demo"),
                     f"--data.init_args.{flag}", value, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"aspp-seg: error: {needle}" or (
        needle in result.stderr.strip().splitlines()[-1]
    )
    assert not (tmp_path / "demo").exists()  # stopped before generating anything


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"val_batch_size": 0}, r"data\.val_batch_size=0 must be an integer >= 1"),
        ({"global_batch_size": 0}, r"data\.global_batch_size=0 must be an integer >= 1"),
        ({"image_size": (32,)}, r"data\.image_size=\[32\] must be \[height, width\]"),
        ({"scale_range": (2.0, 1.0)}, r"data\.scale_range=.* 0 < min <= max"),
        ({"cat_max_ratio": 0.0}, r"data\.cat_max_ratio=0\.0 must be in \(0, 1\]"),
        ({"batch_size": True}, r"data\.batch_size=True must be an integer"),
        ({"num_train": 0}, r"data\.num_train=0 must be an integer >= 1"),
    ],
)
def test_constructor_names_the_setting(tmp_path, settings, needle):
    with pytest.raises(ConfigError, match=needle):
        DemoDataModule(str(tmp_path / "demo"), **settings)


def test_every_data_module_takes_the_shared_settings(tmp_path, tiny_cityscapes):
    for cls in (CityscapesDataModule, CamVidDataModule):
        with pytest.raises(ConfigError, match=r"data\.batch_size=0"):
            cls(str(tmp_path), batch_size=0)
    dm = CityscapesDataModule(str(tiny_cityscapes), batch_size=3, num_workers=0, cat_max_ratio=0.75)
    assert dm.batch_size == 3 and dm.hparams["batch_size"] == 3
    assert dm.hparams["crop_size"] == (513, 513)  # its own default, shown in --print_config
