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

import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aspp_seg.errors import ConfigError

NAME = "benchmark"
HELP = "latency, images/s, peak memory, params and GMACs of a config's net vs torchvision"

METRICS = (
    ("fwd_ms", "fwd ms/batch", "{:.1f}"),
    ("fwd_img_s", "fwd img/s", "{:.2f}"),
    ("train_ms", "fwd+bwd ms/batch", "{:.1f}"),
    ("train_img_s", "fwd+bwd img/s", "{:.2f}"),
    ("fwd_mem_mib", "fwd peak MiB", "{:.0f}"),
    ("train_mem_mib", "fwd+bwd peak MiB", "{:.0f}"),
    ("params_m", "params M", "{:.2f}"),
    ("gmacs", "GMACs/img", "{:.1f}"),
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Returns freed heap memory to the OS (glibc's malloc_trim), so that RSS drops."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Yields a dict whose ``mib`` is, on exit, the phase's peak memory (see module doc)."""
    out = {"mib": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    if not Path("/proc/self/statm").is_file():  # not Linux: no RSS sampling
        yield out
        return
    _release_free_memory()  # else memory freed by an earlier phase hides this one's rise
    start = _rss_bytes()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        out["mib"] = (peak[0] - start) / 2**20


def _timed(step: Callable[[], None], *, iters: int, warmup: int, device: torch.device) -> float:
    """Median seconds of `step` over `iters` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _outputs(result: torch.Tensor | dict) -> list[torch.Tensor]:
    if isinstance(result, dict):
        return [v for v in result.values() if isinstance(v, torch.Tensor)]
    return [result]


def measure(
    net: nn.Module,
    *,
    size: tuple[int, int],
    batch: int,
    num_classes: int,
    device: torch.device,
    iters: int = 10,
    warmup: int = 3,
    backward: bool = True,
    channels_last: bool = False,
    bf16: bool = False,
    compile: bool = False,
) -> dict:
    """Figures of one network that maps B x 3 x H x W to ``{"out": logits, ...}``."""
    net = net.to(device)
    params = sum(p.numel() for p in net.parameters())
    images = torch.randn(batch, 3, *size, device=device)
    target = torch.randint(0, num_classes, (batch, *size), device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    run = torch.compile(net) if compile else net
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), autocast, counter:
        net(images[:1])
    gmacs = counter.get_total_flops() / 2e9

    def forward() -> None:
        with torch.no_grad(), autocast:
            run(images)

    with peak_memory(device) as fwd_mem:
        fwd = _timed(forward, iters=iters, warmup=warmup, device=device)
    result = {
        "fwd_ms": 1e3 * fwd,
        "fwd_img_s": batch / fwd,
        "fwd_mem_mib": fwd_mem["mib"],
        "params_m": params / 1e6,
        "gmacs": gmacs,
    }
    if backward:
        net.train()

        def train_step() -> None:
            with autocast:
                outputs = _outputs(run(images))
                loss = sum(F.cross_entropy(o.float(), target) for o in outputs)
            loss.backward()
            net.zero_grad(set_to_none=True)

        try:
            with peak_memory(device) as train_mem:
                train = _timed(train_step, iters=iters, warmup=warmup, device=device)
        except ValueError as error:  # e.g. BatchNorm after global pooling at batch 1
            print(f"  fwd+bwd not measured: {str(error).splitlines()[0]}")
            net.to("cpu")
            return result
        result |= {
            "train_ms": 1e3 * train,
            "train_img_s": batch / train,
            "train_mem_mib": train_mem["mib"],
        }
    net.to("cpu")
    return result


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or value != value else fmt.format(value)


def table(rows: dict[str, dict], ratios: dict[str, float] | None) -> str:
    """Markdown table: one row per model, plus the ratio row."""
    header = ["model", *[title for _, title, _ in METRICS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [_cell(row.get(key), fmt) for key, _, fmt in METRICS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    if ratios:
        cells = [_cell(ratios.get(key), "{:.2f}x") for key, _, _ in METRICS]
        lines.append("| " + " | ".join(["ours / torchvision", *cells]) + " |")
    return "\n".join(lines) + "\n"


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
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
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
          f"({settings['device_name']}, {settings['threads']} threads), batch {args.batch} "
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
    print(table(rows, ratios))
    if args.json:
        payload = {"config": args.config, "settings": settings, "results": rows,
                   "ratios": ratios}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
