"""Every config builds the same network and data pipeline as recorded.

`golden_configs.json` was recorded (with `golden_configs.describe_*`) from the code
before the config reader was unified (commit e73e719). A YAML key may move; what a
config builds may not change without re-recording the file on purpose
(``python tests/cli/golden_configs.py NAME...``, see docs/extending.md). A new config is
recorded here on its first run: commit the file with it.
"""

from __future__ import annotations

import json
import warnings

import pytest
from golden_configs import GOLDEN, build, configs, describe_data, describe_net, record


class GoldenRecorded(Warning):
    """The records changed: commit tests/cli/golden_configs.json."""


@pytest.fixture(scope="module")
def golden() -> dict:
    """The records, after recording each config that has none and dropping the records
    of configs that are gone."""
    recorded = json.loads(GOLDEN.read_text())
    missing = [name for name in configs() if name not in recorded]
    if missing or set(recorded) - set(configs()):
        record(missing)
        warnings.warn(GoldenRecorded(f"recorded {missing} in {GOLDEN}: commit it"), stacklevel=1)
    return json.loads(GOLDEN.read_text())


def test_every_config_is_recorded(golden):
    assert sorted(golden) == configs()


@pytest.mark.parametrize("name", configs())
def test_config_builds_what_it_did(name, golden, tmp_path):
    datamodule, net = build(name, tmp_path)
    assert describe_net(net) == golden[name]["net"]
    assert describe_data(datamodule) == golden[name]["data"]


def test_a_missing_record_is_recorded(golden, tmp_path):
    """What a new config gets on its first run (here demo's, into a file without it)."""
    path = tmp_path / "golden.json"
    path.write_text(json.dumps({"gone": {}}))  # a config that no longer exists
    record(["demo"], path)
    assert json.loads(path.read_text()) == {"demo": golden["demo"]}
