"""What a config builds, as plain JSON: the record that `test_golden_configs` compares.

`describe` depends only on the built objects (no aspp-seg import), so the same code
recorded `golden_configs.json` from the code before the config reader was unified.
"""

from __future__ import annotations

import hashlib
import json

# Every YAML in configs/ except the logger/ and trainer/ presets (and base/, which
# runs as DL-1 and is covered by dl1).
CONFIGS = (
    "camvid", "camvid_full", "deeplabv3_os8", "deeplabv3plus", "demo", "dl1", "dl1_150ep",
    "dl2", "dl3", "dl4", "folder_example", "segnet", "torchvision_reference",
)  # fmt: skip

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


def record(names: list[str]) -> None:
    """Re-records the named configs in golden_configs.json (on purpose: a config whose
    network or data pipeline was changed deliberately, or a new config)."""
    import tempfile
    from pathlib import Path

    import yaml

    from aspp_seg.cli.config import build_datamodule, build_net, read_config

    repo = Path(__file__).resolve().parents[2]
    path = Path(__file__).with_name("golden_configs.json")
    golden = json.loads(path.read_text())
    for name in names:
        args = ["--config", str(repo / "configs" / f"{name}.yaml")]
        if name == "folder_example":
            classes = Path(tempfile.mkdtemp()) / "classes.yaml"
            classes.write_text(yaml.safe_dump(FOLDER_CLASSES))
            args += ["--data.init_args.classes", str(classes)]
        config = read_config(args)
        datamodule = build_datamodule(config)
        net = build_net(config, num_classes=datamodule.num_classes, device="meta")
        golden[name] = {"net": describe_net(net), "data": describe_data(datamodule)}
    path.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")


if __name__ == "__main__":  # python tests/cli/golden_configs.py camvid camvid_full
    import sys

    record(sys.argv[1:])
