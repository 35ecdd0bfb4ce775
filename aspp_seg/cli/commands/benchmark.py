"""``aspp-seg benchmark``: speed, memory and cost of a config's network, against
torchvision's ``deeplabv3_resnet101`` on the same input in the same run.

    aspp-seg benchmark --config configs/dl1.yaml --size 512 1024 --batch 2
    aspp-seg benchmark --config configs/dl1.yaml --device cuda --bf16 true \\
        --channels_last true --compile true --json bench.json

Per model: forward latency (eval mode, no grad) and forward + backward latency (train
mode, cross-entropy on random labels, no optimiser step), both as the median over
``--iters`` timed batches after ``--warmup`` untimed ones, and as images/s; peak
memory of each phase (CUDA: max allocated; CPU: the rise of the process RSS over the
phase, sampled every 2 ms, after returning freed heap memory to the OS); parameters;
GMACs per image of one inference forward pass (PyTorch's FlopCounterMode). Then
ours / torchvision ratios (below 1 = we are faster, smaller, cheaper). Both networks
get random weights (``pretrained`` forced off; torchvision: ``weights=None,
weights_backbone=None``, no aux head, the same number of classes; built by
`aspp_seg.models.port.torchvision_deeplabv3`).
"""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import ArgumentParser

from aspp_seg.errors import ConfigError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="aspp-seg benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, required=True, help="YAML config of the net")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], help="H W")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--num_classes", type=int, default=19)
    parser.add_argument("--iters", type=int, default=10, help="timed batches per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per phase")
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--backward", type=bool, default=True, help="also time fwd+bwd")
    parser.add_argument("--channels_last", type=bool, default=False)
    parser.add_argument("--bf16", type=bool, default=False, help="bfloat16 autocast")
    parser.add_argument("--compile", type=bool, default=False, help="torch.compile both nets")
    parser.add_argument("--torchvision", type=bool, default=True, help="measure the reference")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=str, help="also write the results to this JSON file")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    import torch

    from aspp_seg.cli.timing import benchmark_table, device_name, measure

    if args.batch < 1 or args.iters < 1 or args.warmup < 0 or min(args.size) < 1:
        raise ConfigError("--batch, --iters and --size must be >= 1, --warmup >= 0")
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA device here; use --device cpu")
    device = torch.device(name)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {
        "size": list(args.size),
        "batch": args.batch,
        "num_classes": args.num_classes,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "iters": args.iters,
        "warmup": args.warmup,
        "channels_last": args.channels_last,
        "bf16": args.bf16,
        "compile": args.compile,
        "torch": torch.__version__,
    }
    options = {
        "size": tuple(args.size),
        "batch": args.batch,
        "num_classes": args.num_classes,
        "device": device,
        "iters": args.iters,
        "warmup": args.warmup,
        "backward": args.backward,
        "channels_last": args.channels_last,
        "bf16": args.bf16,
        "compile": args.compile,
    }
    print(f"aspp-seg benchmark: {args.config} on {settings['device']} "
          f"({settings['device_name']}), batch {args.batch} "
          f"x 3 x {args.size[0]} x {args.size[1]}, {args.iters} timed + {args.warmup} "
          "warm-up batches per phase")  # fmt: skip
    from aspp_seg.cli.config import build_net, read_config

    net = build_net(read_config(["--config", args.config]), num_classes=args.num_classes)
    rows = {"aspp-seg": measure(net, **options)}
    ratios = None
    if args.torchvision:
        from aspp_seg.models.port import torchvision_deeplabv3

        reference = torchvision_deeplabv3(num_classes=args.num_classes)  # its defaults: stock
        rows["torchvision deeplabv3_resnet101"] = measure(reference, **options)
        ours, theirs = rows["aspp-seg"], rows["torchvision deeplabv3_resnet101"]
        ratios = {key: ours[key] / theirs[key] for key in ours if theirs.get(key)}
    print(benchmark_table(rows, ratios))
    if args.json:
        payload = {"config": args.config, "settings": settings, "results": rows,
                   "ratios": ratios}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
