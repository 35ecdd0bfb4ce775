"""`aspp-seg summary`: parameters and forward GMACs of a config's network, by part.

    aspp-seg summary --config configs/dl1.yaml configs/dl2.yaml [--size H W] [--json]

The network is built from ``model.net`` of each resolved config (includes, dotted
overrides and all, exactly as ``aspp-seg fit`` reads it) with ``pretrained: false`` on
PyTorch's meta device: no weights are allocated or downloaded, so even ResNet-101 at
full resolution takes a second. MACs come from `torch.utils.flop_counter` (one
multiply-add = 2 FLOPs) for one image, in training mode so that the auxiliary head
(which runs only in training) is counted: the total counts every head, as torchvision's
published figures do; inference costs the total minus the ``Aux`` column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aspp_seg.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


PARTS = ("backbone", "aspp", "head", "aux")
_PART_OF = {
    "backbone": "backbone",
    "encoder": "backbone",
    "aspp": "aspp",
    "head": "head",
    "decoder": "head",
    "unpool": "head",
    "classifier": "head",
    "aux_head": "aux",
}
DEFAULT_SIZE = (513, 513)


def part_of(name: str) -> str:
    """The part (one of `PARTS`) that the module with qualified `name` belongs to."""
    if name == "aspp" or ".aspp." in f".{name}.":
        return "aspp"
    return _PART_OF.get(name.split(".")[0], "head")


def count(net: nn.Module, size: Sequence[int]) -> dict:
    """Parameters and GMACs of `net` for one 3 x H x W image, total and by part.

    Every leaf module is assigned to a part by its name (`part_of`), so the figures do
    not depend on how a forward pass walks its containers.

    Returns:
        ``{"params": {part: n, "total": n}, "gmacs": {part: g, "total": g,
        "inference": g}}``; ``total`` GMACs include the aux head, ``inference``
        leaves it out.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    leaves = [(n, m) for n, m in net.named_modules() if n and not list(m.children())]
    params = dict.fromkeys(PARTS, 0)
    for name, module in leaves:
        params[part_of(name)] += sum(p.numel() for p in module.parameters())
    params["total"] = sum(p.numel() for p in net.parameters())

    device = next(net.parameters()).device
    counter = FlopCounterMode(display=False)
    net.train()
    with torch.no_grad(), counter:
        net(torch.zeros(1, 3, *size, device=device))
    flops = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    root = type(net).__name__
    gmacs = dict.fromkeys(PARTS, 0.0)
    for name, _ in leaves:
        gmacs[part_of(name)] += flops.get(f"{root}.{name}", 0) / 2e9
    gmacs["total"] = flops.get("Global", 0) / 2e9
    gmacs["inference"] = gmacs["total"] - gmacs["aux"]
    return {"params": params, "gmacs": gmacs}


def summarize(path: str, size: Sequence[int] | None = None, num_classes: int | None = None) -> dict:
    """`count` for the network of the config at `path`.

    Args:
        path: a YAML config.
        size: (H, W) of the input; None: the config's ``data.init_args.crop_size``,
            else 513 x 513.
        num_classes: build the net for this many classes; None: the config's
            net builder's default (19, Cityscapes).
    """
    from aspp_seg.cli.config import build_net, read_config

    config = read_config(["--config", path])
    if size is None:
        crop = getattr(config.data.init_args, "crop_size", None)
        size = tuple(crop) if crop else DEFAULT_SIZE
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"--size {list(size)}: give two positive integers H W")
    net = build_net(config, num_classes=num_classes, device="meta")
    result = count(net, size)
    return {
        "config": path,
        "model": config.model.net.class_path.rpartition(".")[2],
        "size": list(size),
        **result,
    }


def markdown(rows: list[dict]) -> str:
    """One line per config: parameters (millions) and GMACs, total and by part."""
    head = (
        "| Config | Model | Input | Params (M) | Backbone | ASPP | Head | Aux "
        "| GMACs | Backbone | ASPP | Head | Aux |"
    )
    lines = [head, "|" + "---|" * 13]
    for row in rows:
        p, g = row["params"], row["gmacs"]
        lines.append(
            f"| {Path(row['config']).name} | {row['model']} | {row['size'][0]}x{row['size'][1]} "
            f"| {p['total'] / 1e6:.3f} | "
            + " | ".join(f"{p[k] / 1e6:.3f}" for k in PARTS)
            + f" | {g['total']:.1f} | "
            + " | ".join(f"{g[k]:.1f}" for k in PARTS)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="aspp-seg summary",
        description="Parameters and forward GMACs of each config's network, by part. "
        "GMACs count every head, the aux head (training only) included; inference "
        "costs GMACs minus the Aux column.",
    )
    parser.add_argument("--config", type=str, nargs="+", required=True, help="YAML configs")
    parser.add_argument(
        "--size", type=int, nargs=2, default=None, help="input H W (default: the crop size)"
    )
    parser.add_argument(
        "--num_classes", type=int, default=None, help="classes (default: the config's)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = [summarize(path, args.size, args.num_classes) for path in args.config]
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))
