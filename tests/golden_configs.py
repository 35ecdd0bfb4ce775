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
    "camvid", "deeplabv3_os8", "deeplabv3plus", "demo", "dl1", "dl1_150ep", "dl2", "dl3",
    "dl4", "folder_example", "segnet", "torchvision_reference",
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
