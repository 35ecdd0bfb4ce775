"""``aspp-seg export``: a trained net as ONNX or TorchScript, checked against PyTorch.

    aspp-seg export --ckpt_path runs/demo/version_0/checkpoints/last.ckpt --format onnx
    aspp-seg export --ckpt_path best.ckpt --config configs/dl1.yaml --format torchscript \\
        --size 1024 2048 --output dl1.pt

The exported model maps RGB images (B x 3 x H x W, values 0-255, uint8 as the data
modules yield them; it normalises inside) to logits (B x C x H x W); for ONNX, batch,
height and width stay free unless ``--fixed_size``. After writing, the export runs on
two random uint8 images of ``--size`` (onnxruntime on the CPU for ONNX) and the largest
logit difference to PyTorch is printed; above
``--tolerance`` the command fails. ONNX needs the ``export`` extra:
``pip install 'aspp-seg[export]'``.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from aspp_seg.errors import UserError

NAME = "export"
HELP = "export a checkpoint to ONNX or TorchScript and check its logits against PyTorch"

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
FORMATS = tuple(SUFFIX)  # aspp_seg.export.FORMATS, without importing torch for --help


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="aspp-seg export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=str, help="checkpoint of `aspp-seg fit`")
    parser.add_argument(
        "--config", type=str, help="run config (default: the config.yaml of the ckpt's run)"
    )
    # choices without type=: jsonargparse wraps type + choices in a lambda that --help prints
    parser.add_argument("--format", choices=list(FORMATS), default="onnx", help="file format")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], help="H W of the example")
    parser.add_argument("--output", type=str, help="file to write (default: next to the ckpt)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--fixed_size", type=bool, default=False, help="ONNX: fix H and W")
    parser.add_argument("--check", type=bool, default=True, help="compare with PyTorch")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference|")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    from aspp_seg import config
    from aspp_seg.export import (
        LogitsModel,
        example_images,
        export_onnx,
        export_torchscript,
        max_difference,
    )
    from aspp_seg.loading import load_model

    if args.ckpt_path:
        net = load_model(args.ckpt_path, config=args.config).net
        default = Path(args.ckpt_path).with_suffix(SUFFIX[args.format])
    elif args.config:
        print("aspp-seg export: no --ckpt_path, exporting random weights")
        net = config.build_net(config.read_config(["--config", args.config])).eval()
        default = Path(Path(args.config).stem + SUFFIX[args.format])
    else:
        raise UserError("aspp-seg export needs --ckpt_path (or --config for random weights)")
    model = LogitsModel(net).eval()
    output = Path(args.output) if args.output else default
    height, width = args.size
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as error:
            raise UserError(
                "ONNX export needs onnx and onnxscript: pip install 'aspp-seg[export]'"
            ) from error
        export_onnx(model, output, size=(height, width), opset=args.opset,
                    dynamic=not args.fixed_size)  # fmt: skip
    else:
        export_torchscript(model, output, size=(height, width))
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB, {args.format})")
    if args.check:
        images = example_images((height, width), batch=2)  # uint8 RGB, as exported
        diff = max_difference(model, output, images)
        print(f"max |logit difference| to PyTorch on 2 x 3 x {height} x {width}: {diff:.2e}")
        if diff > args.tolerance:
            raise UserError(
                f"exported {output} differs from PyTorch by {diff:.2e} > --tolerance "
                f"{args.tolerance}"
            )
