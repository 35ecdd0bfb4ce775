"""What a config builds, as plain JSON: the record that `test_golden_configs` compares.

`describe_net` and `describe_data` depend only on the built objects (no aspp-seg
import), so the same code recorded `golden_configs.json` from the code before the config
reader was unified. Every YAML at the top of ``configs/`` has a record; the test records
a config that has none (a new config) and drops the record of one that is gone. To
re-record configs whose network or data pipeline changed on purpose:

    python tests/cli/golden_configs.py camvid camvid_full
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden_configs.json")


def configs() -> list[str]:
    """The configs that run as they are: every YAML at the top of ``configs/`` (its
    folders hold parts: ``base/``, ``logger/``, ``trainer/``, ``overlay/``)."""
    return sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


# folder_example reads its class table from data.root at construction: the test points
# it at this one instead, so that no data set has to exist.
FOLDER_CLASSES = {"names": ["background", "road", "car"], "ignore_index": 255}


def _sha(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def describe_net(net) -> dict:
    """Parameter count and hashes of the module tree and of the state_dict keys/shapes."""
    modules = [(name, type(m).__name__) for name, m in net.named_modules()]
    state = [(key, list(value.shape)) for key, value in net.state_dict().items()]
    # rates and kernel sizes leave the two lists above unchanged (dl1 vs dl2)
    convs = [
        (name, type(m).__name__, str(m.kernel_size), str(m.stride), str(m.padding), str(m.dilation))
        for name, m in net.named_modules()
        if hasattr(m, "dilation") and hasattr(m, "kernel_size")
    ]
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "modules": len(modules),
        "module_tree_sha": _sha(modules),
        "state_dict_sha": _sha(state),
        "convs_sha": _sha(convs),
    }


def _transform(transform) -> dict:
    import albumentations as A

    return {"repr": repr(transform), "dict": json.loads(json.dumps(A.to_dict(transform)))}


def describe_data(datamodule) -> dict:
    """The data module's class, classes, batch sizes and train / eval transforms."""
    return {
        "class": type(datamodule).__name__,
        "num_classes": datamodule.num_classes,
        "class_names": list(datamodule.class_names),
        "batch_size": datamodule.batch_size,
        "val_batch_size": datamodule.val_batch_size,
        "train_transform": _transform(datamodule.train_tf),
        "eval_transform": _transform(datamodule.eval_tf),
    }


def build(name: str, scratch: Path):
    """The data module and the network (on the meta device) that ``configs/<name>.yaml``
    builds; `scratch` is a folder for the class table that folder_example reads."""
    import yaml

    from aspp_seg.cli.config import build_datamodule, build_net, read_config

    args = ["--config", str(REPO / "configs" / f"{name}.yaml")]
    if name == "folder_example":
        (scratch / "classes.yaml").write_text(yaml.safe_dump(FOLDER_CLASSES))
        args += ["--data.init_args.classes", str(scratch / "classes.yaml")]
    config = read_config(args)
    datamodule = build_datamodule(config)  # data.root need not exist
    return datamodule, build_net(config, num_classes=datamodule.num_classes, device="meta")


def record(names: list[str], path: Path = GOLDEN) -> None:
    """Records the named configs in `path` (on purpose: a config whose network or data
    pipeline was changed deliberately, or a new config) and drops the records of
    configs that are gone."""
    import tempfile

    from aspp_seg.data.io import write_file

    golden = json.loads(path.read_text()) if path.is_file() else {}
    for name in names:
        with tempfile.TemporaryDirectory() as scratch:
            datamodule, net = build(name, Path(scratch))
            golden[name] = {"net": describe_net(net), "data": describe_data(datamodule)}
    shipped = configs()
    kept = {name: golden[name] for name in sorted(golden) if name in shipped}
    write_file(path, json.dumps(kept, indent=1) + "\n")


if __name__ == "__main__":  # python tests/cli/golden_configs.py camvid camvid_full
    import sys

    record(sys.argv[1:])
