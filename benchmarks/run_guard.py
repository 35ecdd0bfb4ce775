"""What the divergence check of `aspp_seg.training.callbacks.RunGuard` costs per step.

Times the guard's per-step hook (``on_train_batch_end``: finiteness of the loss, and on a
GPU the non-blocking copy of the flag plus the check of the previous step's) against one
training step of the demo network (ResNet-10-T DeepLabV3, batch 8 of 128x256, forward,
loss, backward, SGD), both in this process, and prints the ratio.

    python benchmarks/run_guard.py                  # CPU
    python benchmarks/run_guard.py --device cuda    # a GPU: the lagged check
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from aspp_seg.models import ASPP, deeplabv3
from aspp_seg.training.callbacks.run_guard import RunGuard


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def guard_us(device: torch.device, calls: int) -> float:
    """Median microseconds of one guard hook call, over rounds of `calls` calls."""
    guard = RunGuard()
    trainer = SimpleNamespace(global_step=0, current_epoch=0, world_size=1)
    loss = torch.tensor(1.25, device=device)
    rounds = []
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for step in range(calls):
            trainer.global_step = step
            guard.on_train_batch_end(trainer, None, {"loss": loss}, None, step)
        _sync(device)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def step_ms(device: torch.device, steps: int) -> float:
    """Median milliseconds of one demo training step."""
    aspp = functools.partial(ASPP, rates=(6, 12, 18), channels=64)  # configs/demo.yaml's
    net = deeplabv3(backbone="resnet10t", pretrained=False, output_stride=8, aspp=aspp)
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randint(0, 256, (8, 3, 128, 256), dtype=torch.uint8, device=device)
    masks = torch.randint(0, 19, (8, 128, 256), device=device)
    times = []
    for i in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        loss = F.cross_entropy(net(images)["out"], masks, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= 2:  # warm-up
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    device = torch.device(args.device)
    per_call = guard_us(device, args.calls)
    per_step = step_ms(device, args.steps)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"RunGuard per step: {per_call:.1f} us")
    print(f"demo training step: {per_step:.1f} ms")
    print(f"overhead: {per_call / (per_step * 1e3) * 100:.4f} % of a step")


if __name__ == "__main__":
    main()
