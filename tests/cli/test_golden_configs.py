"""Every config builds the same network and data pipeline as recorded.

`golden_configs.json` was recorded (with `golden_configs.describe_*`) from the code
before the config reader was unified (commit e73e719). A YAML key may move; what a
config builds may not change without re-recording the file on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from golden_configs import CONFIGS, FOLDER_CLASSES, describe_data, describe_net

from aspp_seg.cli.config import build_datamodule, build_net, read_config

REPO = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((Path(__file__).with_name("golden_configs.json")).read_text())


def test_every_config_is_recorded():
    assert sorted(GOLDEN) == sorted(CONFIGS)
    shipped = {p.stem for p in (REPO / "configs").glob("*.yaml")}
    assert shipped == set(CONFIGS)  # a new config: record it


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_what_it_did(name, tmp_path):
    args = ["--config", str(REPO / "configs" / f"{name}.yaml")]
    if name == "folder_example":
        (tmp_path / "classes.yaml").write_text(yaml.safe_dump(FOLDER_CLASSES))
        args += ["--data.init_args.classes", str(tmp_path / "classes.yaml")]
    config = read_config(args)
    datamodule = build_datamodule(config)  # data.root need not exist
    net = build_net(config, num_classes=datamodule.num_classes, device="meta")
    assert describe_net(net) == GOLDEN[name]["net"]
    assert describe_data(datamodule) == GOLDEN[name]["data"]
