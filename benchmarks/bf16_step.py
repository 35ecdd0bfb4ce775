"""bf16 against float32, and ``torch.compile`` on and off, for one training step (forward,
loss, backward, SGD step) of the nets that train on this CPU, measured in one run.

Nets, built from their configs with 11 classes (CamVid), channels_last, batch 8 of
176x240 frames:

- ``study``: ``configs/dl1.yaml`` with ``configs/overlay/study_camvid.yaml`` (ResNet-18
  DL-1, output stride 16, 128-channel ASPP): a cell of experiments.table1's CamVid study;
- ``recipe``: ``configs/camvid.yaml`` (DeepLabV3+ with the DL-1 ASPP, ResNet-18).

Each net runs in four variants: float32 or bf16 autocast (``bf16-mixed``: float32
weights, gradients and SGD state, float32 loss), eager or ``torch.compile``d. The step is
`train_throughput.Runner`'s. All variants of all nets are built first, warmed up
(compile happens there), then timed in rounds: one step of each, the order reversed
every other round, so a drift in machine load hits every variant alike. The figures are
the median wall time per step and the median CPU time of this process per step (on a
shared machine the CPU time is disturbed less), and their ratios bf16 / float32 and
compiled / eager. The first lines name the CPU, its bf16 capabilities as torch reports
them, the thread count and the load average.

    OMP_NUM_THREADS=1 python benchmarks/bf16_step.py --threads 1 --rounds 5

is the command of the figures given in issue 32 (one thread, on a 2-core machine shared
with other jobs, so the wall times are contended: the CPU-time ratios are the firmer
ones). Compiling takes minutes per variant on one thread; ``--compile '[false]'`` and
``--nets '[study]'`` give a shorter run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

import torch
from jsonargparse import CLI
from train_throughput import Runner

from aspp_seg.cli.config import build_net, read_config
from aspp_seg.training.precision import native_bf16

REPO = Path(__file__).resolve().parents[1]
NETS = {
    "study": ["configs/dl1.yaml", "configs/overlay/study_camvid.yaml"],
    "recipe": ["configs/camvid.yaml"],
}
"""Net name -> its config files, layered in order."""


def build(configs: list[str], *, num_classes: int) -> torch.nn.Module:
    """The network that ``aspp-seg fit --config ...`` trains, random weights."""
    args = [item for config in configs for item in ("--config", str(REPO / config))]
    return build_net(read_config(args), num_classes=num_classes)


def variant_name(bf16: bool, compiled: bool) -> str:
    return f"{'bf16' if bf16 else 'fp32'}{'+compile' if compiled else ''}"


def cpu_line() -> str:
    """The CPU, torch's view of it and the machine's load."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        model = names[0] if names else model
    flags = native_bf16() or ["none"]
    return (
        f"CPU {model}; native bf16 (torch.cpu.get_capabilities): {', '.join(flags)}; "
        f"torch {torch.__version__}, ATen CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s); "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )


def main(
    *,
    nets: list[str] = ["study", "recipe"],  # noqa: B006 - jsonargparse reads the default
    compile: list[bool] = [False, True],  # noqa: B006
    batch: int = 8,
    height: int = 176,
    width: int = 240,
    num_classes: int = 11,
    warmup: int = 2,
    rounds: int = 5,
    threads: int | None = None,
    json_out: str | None = None,
) -> dict:
    """Times the variants and prints one table row each, then the ratios per net.

    Args:
        nets: names from `NETS`.
        compile: the ``torch.compile`` settings to measure ([false, true]: both).
        batch, height, width: the training batch (the CamVid configs: 8 x 176 x 240).
        num_classes: classifier size (CamVid: 11).
        warmup: untimed steps per variant (the first compiled one compiles).
        rounds: timed steps per variant, one a round.
        threads: torch's CPU threads (default: torch's choice).
        json_out: also write every step time to this JSON file.

    Returns:
        ``{net: {variant: {"step_s", "cpu_s", "step_s_all", "cpu_s_all"}}}``.
    """
    unknown = set(nets) - set(NETS)
    if unknown:
        raise ValueError(f"unknown nets {sorted(unknown)}; allowed: {sorted(NETS)}")
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    print(cpu_line(), flush=True)
    runners: dict[tuple[str, str], Runner] = {}
    for net in nets:
        for compiled in compile:
            for bf16 in (False, True):
                paths = {"channels_last", *(["bf16"] if bf16 else []),
                         *(["compile"] if compiled else [])}  # fmt: skip
                torch.manual_seed(0)
                runner = Runner(
                    build(NETS[net], num_classes=num_classes), paths=paths, device=device,
                    batch=batch, size=(height, width), num_classes=num_classes,
                )  # fmt: skip
                for _ in range(warmup):
                    runner.timed_step()
                runners[net, variant_name(bf16, compiled)] = runner
    times: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in runners}
    order = list(runners)
    for round_ in range(rounds):
        for key in order if round_ % 2 == 0 else order[::-1]:
            times[key].append(runners[key].timed_step())
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    result: dict[str, dict] = {net: {} for net in nets}
    print(f"\n| net | variant | step s (median of {rounds}) | CPU s | img/s |")
    print("|---|---|---|---|---|")
    for (net, variant), pairs in times.items():
        row = {
            "step_s": statistics.median(wall for wall, _ in pairs),
            "cpu_s": statistics.median(cpu for _, cpu in pairs),
            "step_s_all": [round(wall, 4) for wall, _ in pairs],
            "cpu_s_all": [round(cpu, 4) for _, cpu in pairs],
        }
        result[net][variant] = row
        print(f"| {net} | {variant} | {row['step_s']:.3f} | {row['cpu_s']:.3f} "
              f"| {batch / row['step_s']:.2f} |")  # fmt: skip
    print()
    for net, rows in result.items():
        for compiled in compile:
            fp32, bf16 = rows[variant_name(False, compiled)], rows[variant_name(True, compiled)]
            print(f"{net}: bf16 / fp32 step time{' (compiled)' if compiled else ''}: "
                  f"{bf16['step_s'] / fp32['step_s']:.3f} wall, "
                  f"{bf16['cpu_s'] / fp32['cpu_s']:.3f} CPU")  # fmt: skip
        if True in compile and False in compile:
            for bf16 in (False, True):
                eager, compiled_ = rows[variant_name(bf16, False)], rows[variant_name(bf16, True)]
                print(f"{net}: compiled / eager step time ({'bf16' if bf16 else 'fp32'}): "
                      f"{compiled_['step_s'] / eager['step_s']:.3f} wall, "
                      f"{compiled_['cpu_s'] / eager['cpu_s']:.3f} CPU")  # fmt: skip
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    CLI(main, as_positional=False)
