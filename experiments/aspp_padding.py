"""How much of each ASPP branch looks at padding: the study's own explanation of its result.

The study explains DL-2's lead and DL-4's last place by the size of the ASPP input: with
a 33x33 map, a 3x3 branch at rate 18 has most of its taps outside the map, on the zero
padding, so it degenerates towards a 1x1 conv. This prints, per config, the ASPP input
size for the frames the config trains on and the fraction of each atrous branch's taps
that fall on the padding, averaged over all output positions:

    python -m experiments.aspp_padding --configs dl1 dl2 dl3 dl4 \\
        --overlay configs/overlay/study_camvid.yaml          # CamVid on a CPU: 11x15
    python -m experiments.aspp_padding --configs dl1 dl2 dl3 dl4   # the study: 33x33

The input size is measured (a forward pass of the config's net on a blank frame of its
crop size, a hook on the ASPP), not computed from the output stride, so odd frame sizes
round as the backbone rounds them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

from aspp_seg.errors import UserError


def padding_fraction(size: tuple[int, int], kernel_size: int, rate: int) -> float:
    """Fraction of a same-padded atrous conv's taps that fall outside an H x W map.

    A K x K kernel at dilation r with padding (K - 1) r / 2 (`aspp_seg.models.layers.
    same_padding`) reads, for output (i, j), the inputs (i + a r - p, j + b r - p) for a,
    b in 0..K-1; a tap outside 0..H-1 x 0..W-1 reads the zero padding.

    Args:
        size: (H, W) of the ASPP input.
        kernel_size: K.
        rate: the dilation r.

    Returns:
        Outside taps / all taps, over the H x W output positions (0: none on padding).
    """
    offsets = np.arange(kernel_size) * rate - (kernel_size - 1) * rate / 2

    def inside(length: int) -> np.ndarray:  # length x K: tap k of position i inside?
        positions = np.arange(length)[:, None] + offsets[None, :]
        return (positions >= 0) & (positions <= length - 1)

    rows, cols = inside(size[0]), inside(size[1])
    inside_taps = rows.sum() * cols.sum()  # the 2-D count factorises over the two axes
    return float(1 - inside_taps / (size[0] * size[1] * kernel_size**2))


def aspp_input_size(net, image_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) of the map the net's ASPP gets for one image of `image_size` (H, W)."""
    import torch

    seen = {}

    def record(module, args) -> None:  # returns None: the input goes on unchanged
        seen["size"] = tuple(args[0].shape[-2:])

    hook = net.head.aspp.register_forward_pre_hook(record)
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, *image_size, dtype=torch.uint8))
    finally:
        hook.remove()
    return seen["size"]


def describe(config: str, overlays: Sequence[str]) -> dict:
    """``{"size": (h, w), "kernel_size": k, "rates": [...], "fractions": [...]}`` of a
    config (name in configs/ or a YAML path) with `overlays` layered over it."""
    from aspp_seg.cli.config import build_net, read_config
    from experiments.plans import config_path

    args = ["--config", str(config_path(config))]
    for overlay in overlays:
        args += ["--config", overlay]
    args += ["--model.net.init_args.pretrained", "false"]  # sizes need no weights
    settings = read_config(args)
    net = build_net(settings)
    aspp = getattr(getattr(net, "head", None), "aspp", None)
    if aspp is None:
        raise UserError(f"--configs {config}: its net has no ASPP")
    data = settings.data.init_args
    image_size = data.get("crop_size") or data.get("image_size")
    if image_size is None:
        raise UserError(f"--configs {config}: no data.crop_size or data.image_size to size by")
    size = aspp_input_size(net, image_size)
    fractions = [padding_fraction(size, aspp.kernel_size, rate) for rate in aspp.rates]
    return {"size": size, "kernel_size": aspp.kernel_size, "rates": list(aspp.rates),
            "fractions": fractions, "image_size": list(image_size)}  # fmt: skip


def markdown(rows: dict[str, dict]) -> str:
    """One line per config: frame size, ASPP input, then each branch's share on padding."""
    lines = ["| config | frames | ASPP input | branches: rate (kernel) -> taps on padding |",
             "|---|---|---|---|"]  # fmt: skip
    for name, row in rows.items():
        branches = ", ".join(
            f"{rate} ({row['kernel_size']}x{row['kernel_size']}) -> {100 * f:.0f}%"
            for rate, f in zip(row["rates"], row["fractions"], strict=True)
        )
        frames = "x".join(map(str, row["image_size"]))
        lines.append(f"| {name} | {frames} | {row['size'][0]}x{row['size'][1]} | {branches} |")
    return "\n".join(lines) + "\n"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m experiments.aspp_padding",
        description="ASPP input size and the share of each branch's taps on the padding.",
    )
    parser.add_argument("--configs", nargs="+", type=str, required=True,
                        help="config names in configs/ or YAML paths")  # fmt: skip
    parser.add_argument("--overlay", nargs="*", type=Path, default=[],
                        help="YAML files layered over every config")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        rows = {name: describe(name, [str(o) for o in args.overlay]) for name in args.configs}
    except UserError as error:
        print(f"aspp_padding: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(markdown(rows), end="")


if __name__ == "__main__":
    main()
