"""The one timing core of ``aspp-seg benchmark`` (`aspp_seg.cli.commands.benchmark`) and
the scripts in ``benchmarks/``; plain PyTorch, nothing of training.

`measure` gives one network's figures for ``aspp-seg benchmark``; `timed_step`,
`peak_memory` and `device_name` also serve ``benchmarks/train_throughput.py``.

A step is timed with the device synchronised before and after it (wall seconds, and the
process's CPU seconds, which a shared CPU disturbs less); figures are medians over
repeated steps after untimed warm-up ones. Peak memory is the CUDA allocator's peak on
a GPU, and on the CPU the rise of the process's resident memory, sampled every 2 ms
(after freed heap memory is returned to the OS, so that an earlier phase's freed
memory does not hide this one's rise).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(step: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of `step`."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    step()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def median_seconds(
    step: Callable[[], object], *, iters: int, warmup: int, device: torch.device
) -> float:
    """Median wall seconds of `step` over `iters` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    return statistics.median(timed_step(step, device)[0] for _ in range(iters))


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
    """Yields a dict whose ``mib`` is, on exit, the phase's peak memory in MiB (NaN where
    it cannot be measured: a CPU without /proc)."""
    out = {"mib": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    if not Path("/proc/self/statm").is_file():  # not Linux: no RSS sampling
        yield out
        return
    _release_free_memory()
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


def device_name(device: torch.device) -> str:
    """The card's name, or the CPU's and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- one network's figures (aspp-seg benchmark) ---

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
        fwd = median_seconds(forward, iters=iters, warmup=warmup, device=device)
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
                train = median_seconds(train_step, iters=iters, warmup=warmup, device=device)
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


def benchmark_table(rows: dict[str, dict], ratios: dict[str, float] | None) -> str:
    """Markdown table: one row per model, plus the ratio row."""
    lines = [
        [name, *[_cell(row.get(key), fmt) for key, _, fmt in METRICS]] for name, row in rows.items()
    ]
    if ratios:
        lines.append(
            ["ours / torchvision", *[_cell(ratios.get(k), "{:.2f}x") for k, _, _ in METRICS]]
        )
    return markdown_table(["model", *[title for _, title, _ in METRICS]], lines)
