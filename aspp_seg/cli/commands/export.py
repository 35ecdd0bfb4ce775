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

The file is written beside its final path and moved into place only after the export
and its check succeed: a failed export leaves no file and the one at ``--output``
as it was. The default path (``<ckpt>.onnx`` / ``.pt``) is never overwritten: when a
file is there, name it with ``--output`` to replace it. The output's extension must be
the format's (``.onnx`` for ONNX; TorchScript: any but ``.onnx``, ``.pt`` by default:
the check and `aspp_seg.evaluation.export.run_exported` tell the two apart by it), and
it is never the checkpoint or config read; both are checked before the net is loaded.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from aspp_seg.errors import UsageError, UserError

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
FORMATS = tuple(SUFFIX)  # aspp_seg.evaluation.export.FORMATS, without importing torch for --help


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


def _resolve(which: str, config_path: str | None) -> str:
    """``--ckpt_path last | best``: found as ``aspp-seg validate`` finds it, from the
    experiment folder of the run's config."""
    from aspp_seg.cli.config import read_config
    from aspp_seg.training.resume import resolve_last

    if not config_path:
        raise UserError(
            f"export --ckpt_path {which}: give --config (the config the run trained with) "
            "to find it, or a .ckpt path"
        )
    run = read_config(["--config", config_path])
    run["ckpt_path"] = which
    return str(resolve_last(run, continue_run=False))


def _check_output(output: Path, args) -> None:
    """Refuses an output path the export could not be written or checked at, before the
    net is loaded.

    Raises:
        UsageError: an extension that is not the format's, a folder, or one of the
            command's own input files.
    """
    from aspp_seg.data.io import refuse_overwriting

    expected = SUFFIX[args.format]
    if (output.suffix == ".onnx") != (args.format == "onnx"):
        other = next(fmt for fmt, suffix in SUFFIX.items() if suffix != expected)
        raise UsageError(
            f"--output {output} does not end in {expected}, the extension of --format "
            f"{args.format}: name it {output.with_suffix(expected)}, or give --format {other}"
        )
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; name the {expected} file to write")
    setting = "--output" if args.output else "the default output (give --output)"
    refuse_overwriting([output], [p for p in (args.ckpt_path, args.config) if p], setting)


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    from aspp_seg.cli import config
    from aspp_seg.evaluation.export import (
        LogitsModel,
        example_images,
        export_onnx,
        export_torchscript,
        max_difference,
        replacing,
    )
    from aspp_seg.loading import load_model

    if args.ckpt_path in ("last", "best"):
        args.ckpt_path = _resolve(args.ckpt_path, args.config)
    if args.ckpt_path:
        default = Path(args.ckpt_path).with_suffix(SUFFIX[args.format])
    elif args.config:
        default = Path(Path(args.config).stem + SUFFIX[args.format])
    else:
        raise UserError("aspp-seg export needs --ckpt_path (or --config for random weights)")
    output = Path(args.output) if args.output else default
    _check_output(output, args)  # before anything is loaded
    if not args.output and output.exists():
        raise UserError(
            f"{output} exists (the default output path); give --output {output} to replace "
            "it, or another --output path"
        )
    if args.ckpt_path:
        net = load_model(args.ckpt_path, config=args.config).net
    else:
        print("aspp-seg export: no --ckpt_path, exporting random weights")
        net = config.build_net(config.read_config(["--config", args.config])).eval()
    model = LogitsModel(net).eval()
    height, width = args.size
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as error:
            raise UserError(
                "ONNX export needs onnx and onnxscript: pip install 'aspp-seg[export]'"
            ) from error
    with replacing(output) as staged:  # `output` untouched unless export and check succeed
        if args.format == "onnx":
            export_onnx(model, staged, size=(height, width), opset=args.opset,
                        dynamic=not args.fixed_size)  # fmt: skip
        else:
            export_torchscript(model, staged, size=(height, width))
        size_mib = staged.stat().st_size / 2**20
        if args.check:
            images = example_images((height, width), batch=2)  # uint8 RGB, as exported
            diff = max_difference(model, staged, images)
            print(f"max |logit difference| to PyTorch on 2 x 3 x {height} x {width}: {diff:.2e}")
            if diff > args.tolerance:
                raise UserError(
                    f"the export differs from PyTorch by {diff:.2e} > --tolerance "
                    f"{args.tolerance}; {output} not written"
                )
    print(f"wrote {output} ({size_mib:.1f} MiB, {args.format})")
