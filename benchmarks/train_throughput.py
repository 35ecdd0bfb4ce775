"""Training throughput: one full step (forward, loss, backward, SGD step) of DL-1 against
torchvision's DeepLabV3-ResNet101 with the same head, measured in the same run.

Compared like with like: both nets are ResNet-101 (random weights) at the same output
stride with DL-1's head: ASPP (1x1 + 3x3 atrous at rates 6/12/18 + image pooling, 256
channels each, 1x1 projection) and a 1x1 classifier, no auxiliary head.

- ``ours``: ``aspp_seg.models.deeplabv3(backbone="resnet101",
  aspp=partial(ASPP, rates=(6, 12, 18)))`` (timm backbone, ``output_stride`` 8 or 16).
- ``torchvision``: ``aspp_seg.models.port.torchvision_deeplabv3(rates=(6, 12, 18),
  head_convs=0)``: torchvision's ResNet-101 with ``replace_stride_with_dilation`` for
  the same stride, its ``DeepLabV3`` and ASPP, and a 1x1 classifier. torchvision's
  stock ``DeepLabHead`` adds a 3x3 256->256 conv + BN + ReLU after the projection (and
  uses rates 12/24/36); the study's head does not, so it is left out here. ``--stock``
  also times the unchanged ``deeplabv3_resnet101(weights=None, weights_backbone=None,
  aux_loss=False)`` (the port builder's defaults) against ours with ``head_convs=1``,
  rates 12/24/36 (the same extra conv).

Each fast path runs on and off as a variant (applied to both nets, so the ratio is
per variant): ``channels_last``, ``bf16`` autocast, ``compile`` (``torch.compile``),
``fused`` SGD. The variant ``auto`` compares each net as it trains by default: ours
with the fast paths aspp-seg switches on automatically on this device
(`aspp_seg.training.hardware`: channels_last on CPU and CUDA; compile and fused SGD on CUDA),
torchvision as its reference training script runs it (fp32, NCHW, eager, foreach SGD);
``auto+bf16`` adds bf16 autocast to both. Steps alternate between the nets in rounds
(ours N steps, then torchvision N steps; the order reverses every round, so a drift in
machine speed hits both alike); the figure is the median step time per net and
ours / torchvision (below 1: ours is faster). On a shared CPU the wall time swings with
other processes' load, so the median CPU time of this process per step
(``time.process_time``; with ``--threads 1`` it is almost pure compute) is reported
beside it, with its own ratio. On CUDA the output
names the card and gives peak memory per net.

    python benchmarks/train_throughput.py                         # 512x1024, OS16 + OS8
    python benchmarks/train_throughput.py --height 256 --width 512 \\
        --variants '[base, channels_last, fused]'                 # fast-path on/off on CPU
    python benchmarks/train_throughput.py --variants '[base, bf16, bf16+channels_last, \\
        bf16+channels_last+compile, all]' --batch 8               # on a GPU
"""

from __future__ import annotations

import json
import os
import resource
import statistics
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from jsonargparse import CLI
from torch import nn

from aspp_seg.cli.timing import device_name, peak_memory, timed_step
from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.models import ASPP, deeplabv3
from aspp_seg.models.port import torchvision_deeplabv3
from aspp_seg.training.hardware import (
    AUTO_DEVICES,
    compile_support,
    fuse_optimizer,
    to_channels_last,
)

FAST_PATHS = ("channels_last", "bf16", "compile", "fused")
MODEL_SWITCHES = {
    "channels_last": "channels_last",
    "compile": "compile",
    "fused": "fused_optimizer",
}
"""Fast path here -> the `FastPaths` callback switch that applies it."""


def automatic_paths(device_type: str) -> set[str]:
    """The fast paths the `FastPaths` callback switches on by itself on `device_type`."""
    paths = {path for path, switch in MODEL_SWITCHES.items() if device_type in AUTO_DEVICES[switch]}
    if "compile" in paths and compile_support(device_type):
        paths.remove("compile")  # FastPaths falls back to eager too
    return paths


def variant_paths(variant: str, device_type: str) -> dict[str, set[str]]:
    """Fast paths per net (``ours``, ``torchvision``) of a variant such as ``bf16+fused``.

    ``auto`` stands for aspp-seg's automatic paths, for ours only (see the docstring).
    """
    parts = set(FAST_PATHS) if variant == "all" else set(variant.split("+")) - {"base"}
    unknown = parts - set(FAST_PATHS) - {"auto"}
    if unknown:
        raise ValueError(f"unknown fast path {sorted(unknown)}; allowed: {FAST_PATHS}, auto")
    shared = parts - {"auto"}
    ours = shared | automatic_paths(device_type) if "auto" in parts else shared
    return {"ours": ours, "torchvision": shared}


def ours_dl1(*, output_stride: int, num_classes: int) -> nn.Module:
    """DL-1: ResNet-101, ASPP at rates 6/12/18 with 256 channels, no 3x3 head conv."""
    return deeplabv3(
        num_classes=num_classes,
        backbone="resnet101",
        pretrained=False,
        output_stride=output_stride,
        aspp=partial(ASPP, rates=(6, 12, 18), channels=256),
    )


def ours_stock(*, output_stride: int, num_classes: int) -> nn.Module:
    """Ours shaped like torchvision's stock head: rates 12/24/36 and one 3x3 conv."""
    return deeplabv3(
        num_classes=num_classes,
        backbone="resnet101",
        pretrained=False,
        output_stride=output_stride,
        aspp=partial(ASPP, rates=(12, 24, 36), channels=256),
        head_convs=1,
    )


class Runner:
    """One net with its optimizer and batch, set up for a variant; `step()` trains once."""

    def __init__(
        self,
        net: nn.Module,
        *,
        paths: set[str],
        device: torch.device,
        batch: int,
        size: tuple[int, int],
        num_classes: int,
    ) -> None:
        self.device = device
        self.paths = paths
        self.net = net.to(device).train()
        self.images = torch.randn(batch, 3, *size, device=device)
        self.masks = torch.randint(0, num_classes, (batch, *size), device=device)
        self.masks[:, :8] = IGNORE_INDEX  # some ignored pixels, as in real labels
        if "channels_last" in paths:
            self.net = self.net.to(memory_format=torch.channels_last)
            self.images = to_channels_last(self.images)
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4
        )
        if "fused" in paths:
            self.optimizer = fuse_optimizer(self.optimizer)
        self.forward: Callable = self.net
        if "compile" in paths:
            reason = compile_support(device.type)
            if reason:
                raise RuntimeError(f"compile variant cannot run: {reason}")
            self.forward = torch.compile(self.net)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, torch.bfloat16, enabled="bf16" in self.paths):
            logits = self.forward(self.images)["out"]
            loss = F.cross_entropy(logits.float(), self.masks, ignore_index=IGNORE_INDEX)
        loss.backward()
        self.optimizer.step()

    def timed_step(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one step."""
        return timed_step(self.step, self.device)


def measure_pair(
    builders: dict[str, Callable[[], nn.Module]],
    *,
    paths: dict[str, set[str]],
    device: torch.device,
    batch: int,
    size: tuple[int, int],
    num_classes: int,
    warmup: int,
    steps: int,
    rounds: int,
) -> dict[str, dict]:
    """Median step time, crops/s and peak memory per net, steps interleaved in rounds.

    `paths` maps each net's name to its fast paths.
    """
    runners, peaks = {}, {}
    for name, build in builders.items():
        with peak_memory(device) as memory:
            torch.manual_seed(0)
            runners[name] = Runner(
                build(),
                paths=paths[name],
                device=device,
                batch=batch,
                size=size,
                num_classes=num_classes,
            )
            for _ in range(warmup):  # compile, cudnn autotuning, allocator warm-up
                runners[name].timed_step()
        # the CUDA allocator's peak; on the CPU the whole run's RSS is printed instead
        peaks[name] = memory["mib"] / 1024 if device.type == "cuda" else None
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    order = list(runners)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            times[name].extend(runners[name].timed_step() for _ in range(steps))
    out = {}
    for name, pairs in times.items():
        median = statistics.median(wall for wall, _ in pairs)
        out[name] = {
            "step_s": median,
            "step_s_all": [round(wall, 4) for wall, _ in pairs],
            "cpu_s": statistics.median(cpu for _, cpu in pairs),
            "cpu_s_all": [round(cpu, 4) for _, cpu in pairs],
            "crops_per_s": batch / median,
            "peak_mem_gib": peaks[name],
        }
    del runners
    return out


def main(
    *,
    height: int = 512,
    width: int = 1024,
    batch: int = 2,
    output_strides: list[int] = [16, 8],  # noqa: B006 - jsonargparse reads the default
    variants: list[str] = ["base"],  # noqa: B006
    warmup: int = 2,
    steps: int = 1,
    rounds: int = 4,
    stock: bool = False,
    num_classes: int = 19,
    device: str = "auto",
    threads: int | None = None,
    json_out: str | None = None,
) -> list[dict]:
    """Times training steps and prints a Markdown table.

    Args:
        height, width: crop size (the Cityscapes recipe: 512x1024).
        batch: crops per step (>= 2: torchvision's image-pooling BatchNorm fails at 1).
        output_strides: 8 and / or 16.
        variants: ``base`` (fp32, NCHW, eager, default SGD) or fast paths joined by
            ``+`` from ``channels_last``, ``bf16``, ``compile``, ``fused``; ``all``
            switches on every one; ``auto``: aspp-seg's automatic paths for ours only.
        warmup: untimed steps per net and variant (the first two steps on CPU are
            slower while the allocator grows).
        steps: timed steps per net in each round.
        rounds: rounds of alternating timed steps.
        stock: also compare torchvision's unchanged deeplabv3_resnet101 (OS8 only).
        num_classes: classes of the classifier (Cityscapes: 19).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: CPU threads for torch (default: torch's choice).
        json_out: also write the rows to this JSON file.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"device: {device_name(dev)}; torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")  # fmt: skip
    rows = []
    for output_stride in output_strides:
        builders = {
            "ours": lambda os_=output_stride: ours_dl1(output_stride=os_, num_classes=num_classes),
            "torchvision": lambda os_=output_stride: torchvision_deeplabv3(
                num_classes=num_classes, output_stride=os_, rates=(6, 12, 18), head_convs=0
            ),
        }
        if stock and output_stride == 8:
            builders["ours (head_convs=1, 12/24/36)"] = lambda: ours_stock(
                output_stride=8, num_classes=num_classes
            )
            builders["torchvision stock"] = lambda: torchvision_deeplabv3(num_classes=num_classes)
        for variant in variants:
            per_kind = variant_paths(variant, dev.type)
            paths = {
                n: per_kind["ours" if n.startswith("ours") else "torchvision"] for n in builders
            }
            load_before = os.getloadavg()[0]
            result = measure_pair(
                builders, paths=paths, device=dev, batch=batch, size=(height, width),
                num_classes=num_classes, warmup=warmup, steps=steps, rounds=rounds,
            )  # fmt: skip
            row = {
                "device": device_name(dev),
                "size": f"{height}x{width}",
                "batch": batch,
                "output_stride": output_stride,
                "variant": variant,
                "paths": {name: sorted(p) or ["none"] for name, p in paths.items()},
                "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "nets": result,
                "ratio": result["ours"]["step_s"] / result["torchvision"]["step_s"],
                "ratio_cpu": result["ours"]["cpu_s"] / result["torchvision"]["cpu_s"],
            }
            if "torchvision stock" in result:
                row["ratio_stock"] = (
                    result["ours (head_convs=1, 12/24/36)"]["step_s"]
                    / result["torchvision stock"]["step_s"]
                )
            rows.append(row)
            print(_row_lines(row), flush=True)
    if dev.type == "cpu":
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak resident memory of the whole run: {rss:.1f} GiB")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def _row_lines(row: dict) -> str:
    lines = []
    for name, r in row["nets"].items():
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
        own = row["paths"][name]
        lines.append(
            f"| {row['size']} | {row['batch']} | OS{row['output_stride']} "
            f"| {row['variant']}: {'+'.join(own)} "
            f"| {name} | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {r['crops_per_s']:.2f} | {mem} |"
        )
    ratio = (
        f"ours / torchvision step time: {row['ratio']:.3f} (wall), "
        f"{row['ratio_cpu']:.3f} (CPU time of the process)"
    )
    if "ratio_stock" in row:
        ratio += f"; with the stock head: {row['ratio_stock']:.3f}"
    lines.append(f"{ratio} (load average {row['load_avg'][0]} -> {row['load_avg'][1]})")
    return "\n".join(lines)


if __name__ == "__main__":
    print("| size | batch | stride | variant | net | step s | CPU s | crops/s | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    CLI(main, as_positional=False)
