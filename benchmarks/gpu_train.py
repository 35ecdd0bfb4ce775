"""GPU check in one run of at most 10 minutes: DL-1 training throughput against
torchvision's reference, and the demo fit, on a CUDA card (issue 32, item 4).

    python benchmarks/gpu_train.py --json gpu_train.json

1. Throughput of the study's DL-1 net at output stride 8: ``configs/dl1.yaml`` (ResNet-101,
   ASPP rates 6/12/18 with 256 channels, no 3x3 head conv) with
   ``--model.net.init_args.output_stride 8``, against torchvision's stock
   ``deeplabv3_resnet101`` (OS8, rates 12/24/36, its 3x3 head conv, no aux head), both
   random weights, 19 classes, batch 8 of 512x1024 crops, bf16 autocast and
   channels_last, ``torch.compile`` off and then on. The figures are `aspp-seg
   benchmark`'s (`aspp_seg.cli.timing.measure`): crops/s of forward + backward with
   cross-entropy (train mode, no optimizer step), median over ``--iters`` batches after
   ``--warmup`` untimed ones, peak memory, and ``ours / torchvision`` crops/s (above 1:
   ours is faster). ``phase s`` is the wall time of one net's whole measurement (build,
   FLOP count, warm-up, timed batches of the forward and the forward + backward
   phases); after the compiled rows, each net's compiled phase time less its eager one
   (``compile_s`` in the JSON) gives compiling and its warm-up, apart from the timed
   batches. cudnn.benchmark is on for both nets.
2. The demo fit on the GPU: ``aspp-seg fit --config configs/demo.yaml --trainer.accelerator
   gpu`` with ``pretrained: false`` (no download: the machine needs no network),
   ``--fit_steps`` steps (120: 4 of the demo's 7 epochs of 30 steps), the trainer's
   other settings as the config has them (precision, the automatic fast paths:
   ``torch.compile`` on CUDA), data generated under ``data/demo`` on first use and the
   run's files in a temporary folder; its wall time (the whole ``aspp-seg fit``:
   parsing, data, compiling, training, validation) and the last val mIoU.

The first line names the card, torch and CUDA. Each phase has its own time budget
(``--*_budget_s``: 90 + 150 + 300 s by default, at most about 9.5 minutes with start-up);
within a throughput phase each net gets half, plus what the first left. A phase past its
budget is stopped and reported as such (exit status 1), and the run goes on to the next.
``--json`` is rewritten after every phase, so a run cut short keeps what it measured.
Without a CUDA device the script ends with one line, unless ``--device cpu`` asks for a
smoke test (tiny sizes: ``tests/cli/test_gpu_benchmark_script.py``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from aspp_seg.cli.config import build_net, read_config
from aspp_seg.cli.timing import device_name, markdown_table, measure
from aspp_seg.data.io import write_file
from aspp_seg.errors import ConfigError, UserError
from aspp_seg.models.port import torchvision_deeplabv3

REPO = Path(__file__).resolve().parents[1]
OURS = "ours (DL-1 R101 OS8)"
THEIRS = "torchvision deeplabv3_resnet101"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="gpu_train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=str, default="cuda", help="cuda, cuda:1; cpu: smoke test")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], help="crop H W")
    parser.add_argument("--batch", type=int, default=8, help="crops per batch (the study's 8)")
    parser.add_argument("--num_classes", type=int, default=19, help="Cityscapes: 19")
    parser.add_argument("--output_stride", type=int, default=8, help="of ours (DL-1: 16)")
    parser.add_argument("--iters", type=int, default=10, help="timed batches per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches (compile here)")
    parser.add_argument("--compile", type=list[bool], default=[False, True],
                        help="torch.compile settings to measure (eager runs first)")  # fmt: skip
    parser.add_argument("--fit", type=bool, default=True, help="run the demo fit")
    parser.add_argument("--fit_steps", type=int, default=120, help="demo fit: training steps")
    parser.add_argument("--fit_args", type=list[str], default=[],
                        help='more `aspp-seg fit` settings, e.g. \'["--data.init_args.'
                             'num_workers", "8"]\'')  # fmt: skip
    parser.add_argument("--eager_budget_s", type=float, default=90, help="both nets, eager")
    parser.add_argument("--fit_budget_s", type=float, default=150, help="demo fit, all in")
    parser.add_argument("--compile_budget_s", type=float, default=300, help="both, compiled")
    parser.add_argument("--json", type=str, help="also write every figure to this JSON file")
    return parser


class OverBudget(BaseException):
    """A phase ran past its time budget (a BaseException, as KeyboardInterrupt is, so that
    no library's ``except Exception`` swallows it)."""


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Raises `OverBudget` in the main thread once `seconds` have passed."""

    def expire(signum, frame) -> None:
        raise OverBudget(f"over the time budget: stopped after {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_phase(name: str, seconds: float, work: Callable[[], dict]) -> dict:
    """`work()`'s figures plus ``phase_s``; on failure or past `seconds`, ``error`` (one
    line) instead, and the run goes on."""
    start = time.perf_counter()
    try:
        with budget(seconds):
            result = work()
    except (Exception, OverBudget) as error:
        line = " ".join(str(error).split()) or type(error).__name__
        print(f"  {name}: {type(error).__name__}: {line[:300]}", flush=True)
        traceback.clear_frames(error.__traceback__)  # let go of the net and its tensors
        result = {"error": f"{type(error).__name__}: {line[:300]}"}
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result | {"phase_s": time.perf_counter() - start}


def throughput(args, device: torch.device, *, compiled: bool, seconds: float) -> dict:
    """Ours and torchvision's figures with `compiled` on or off, both within `seconds`
    (each net at most half of it, plus what the first one left), and their crops/s ratio."""
    options = {
        "size": tuple(args.size), "batch": args.batch, "num_classes": args.num_classes,
        "device": device, "iters": args.iters, "warmup": args.warmup,
        "channels_last": True, "bf16": True, "compile": compiled,
    }  # fmt: skip
    dl1 = ["--config", str(REPO / "configs" / "dl1.yaml"),
           "--model.net.init_args.output_stride", str(args.output_stride)]  # fmt: skip
    builders = {
        OURS: lambda: build_net(read_config(dl1), num_classes=args.num_classes),
        THEIRS: lambda: torchvision_deeplabv3(num_classes=args.num_classes),
    }
    deadline = time.perf_counter() + seconds
    rows = {}
    for i, (name, build) in enumerate(builders.items()):
        print(f"compile {'on' if compiled else 'off'}: {name} ...", flush=True)
        torch.manual_seed(0)
        # an equal share of what is left: a slow first net leaves the second its time
        share = max(1.0, (deadline - time.perf_counter()) / (len(builders) - i))
        rows[name] = run_phase(name, share, lambda build=build: measure(build(), **options))
    ours, theirs = rows[OURS].get("train_img_s"), rows[THEIRS].get("train_img_s")
    return {"rows": rows, "crops_s_ratio": ours / theirs if ours and theirs else None}


def demo_fit(args, device: torch.device, workdir: Path) -> dict:
    """``aspp-seg fit --config configs/demo.yaml`` on `device`: wall time and val mIoU."""
    from aspp_seg.cli.lightning_cli import lightning_cli

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    devices = f"[{device.index}]" if device.index is not None else "1"
    # training stops between steps a minute before the phase's budget (data generation,
    # validation and the run's files get the rest)
    minutes, seconds = divmod(int(max(args.fit_budget_s - 60, 10)), 60)
    fit_args = [
        "fit", "--config", str(REPO / "configs" / "demo.yaml"),
        "--trainer.accelerator", accelerator, "--trainer.devices", devices,
        "--model.net.init_args.pretrained", "false",  # no network on the machine
        "--trainer.max_steps", str(args.fit_steps),
        "--trainer.max_time", f"00:00:{minutes:02d}:{seconds:02d}",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(workdir),
        "--trainer.logger.init_args.save_dir", str(workdir),
        "--data.init_args.root", str(REPO / "data" / "demo"),
        *args.fit_args,
    ]  # fmt: skip
    print(f"  aspp-seg {' '.join(fit_args)}", flush=True)
    start = time.perf_counter()
    cli = lightning_cli(fit_args)
    wall = time.perf_counter() - start
    miou = cli.trainer.callback_metrics.get("val/mIoU")
    return {
        "wall_s": wall,
        "val_miou": float(miou) if miou is not None else None,
        "steps": cli.trainer.global_step,
        "epochs": cli.trainer.current_epoch,
        "precision": str(cli.trainer.precision),
        "args": fit_args,
    }


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or value != value else fmt.format(value)


COLUMNS = (
    ("train_img_s", "fwd+bwd crops/s", "{:.2f}"),
    ("train_ms", "fwd+bwd ms/batch", "{:.1f}"),
    ("fwd_img_s", "fwd crops/s", "{:.2f}"),
    ("train_mem_mib", "fwd+bwd peak MiB", "{:.0f}"),
    ("phase_s", "phase s", "{:.1f}"),
)


def print_throughput(label: str, phase: dict) -> None:
    """One Markdown row per net, then their ratio."""
    lines = []
    for name, row in phase["rows"].items():
        cells = [_cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append([label, name, *cells, row.get("error", "")])
    ratio = _cell(phase["crops_s_ratio"], "{:.3f}x")
    lines.append([label, "ours / torchvision", ratio, *[""] * len(COLUMNS)])
    header = ["compile", "net", *[title for _, title, _ in COLUMNS], "error"]
    print(markdown_table(header, lines), flush=True)


def print_fit(fit: dict, device: torch.device) -> None:
    figures = (
        f"{fit.get('steps', '-')} steps, wall {_cell(fit.get('wall_s'), '{:.1f}')} s, "
        f"val mIoU {_cell(fit.get('val_miou'), '{:.4f}')}, precision {fit.get('precision', '-')}"
    )
    error = f"; {fit['error']}" if "error" in fit else ""
    print(f"demo fit on {device}: {figures} ({fit['phase_s']:.1f} s with set-up){error}")


def main(argv: list[str] | None = None) -> int:
    """Runs the phases; returns the exit status (0: every phase gave its figures)."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as error:
        print(f"gpu_train.py: error: {error}", file=sys.stderr)
        return error.exit_code


def _run(args) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {args.device}: no CUDA GPU on this machine (torch.cuda.is_available() "
            "is False); run this on a GPU machine, or pass --device cpu with a tiny --size "
            "for a smoke test"
        )
    if args.batch < 2 or args.iters < 1 or args.warmup < 0 or min(args.size) < 1:
        raise ConfigError("--batch >= 2 (BatchNorm after image pooling), --iters >= 1, "
                          "--warmup >= 0, --size >= 1")  # fmt: skip
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ConfigError(f"--device {args.device}: not a device (cuda, cuda:N, cpu)") from None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    report = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "settings": {
            "size": list(args.size), "batch": args.batch, "num_classes": args.num_classes,
            "output_stride": args.output_stride, "iters": args.iters, "warmup": args.warmup,
            "bf16": True, "channels_last": True, "cudnn_benchmark": device.type == "cuda",
        },
        "throughput": {},
    }  # fmt: skip

    def save() -> None:
        report["total_s"] = time.perf_counter() - started
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            write_file(args.json, json.dumps(report, indent=2) + "\n")

    print(f"gpu_train: {report['device_name']} ({device}), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)  # fmt: skip
    print(f"throughput: {OURS} vs {THEIRS}, batch {args.batch} x 3 x {args.size[0]} x "
          f"{args.size[1]}, {args.num_classes} classes, bf16 autocast, channels_last, "
          f"{args.iters} timed + {args.warmup} warm-up batches", flush=True)  # fmt: skip
    # eager first, the demo fit next, compiling (the longest phase) last
    if False in args.compile:
        phase = throughput(args, device, compiled=False, seconds=args.eager_budget_s)
        report["throughput"]["compile off"] = phase
        print_throughput("off", phase)
        save()
    if args.fit:
        print("demo fit ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="gpu_train_fit_") as workdir:
            work = lambda: demo_fit(args, device, Path(workdir))  # noqa: E731
            report["fit"] = run_phase("demo fit", args.fit_budget_s, work)
        print_fit(report["fit"], device)
        save()
    if True in args.compile:
        phase = throughput(args, device, compiled=True, seconds=args.compile_budget_s)
        report["throughput"]["compile on"] = phase
        print_throughput("on", phase)
        eager = report["throughput"].get("compile off")
        for name, row in phase["rows"].items():
            if eager and "error" not in row and "error" not in eager["rows"][name]:
                row["compile_s"] = row["phase_s"] - eager["rows"][name]["phase_s"]
                print(f"{name}: compiling and its warm-up took about {row['compile_s']:.1f} s "
                      "(compiled phase s less eager phase s)")  # fmt: skip
    save()
    print(f"total {report['total_s']:.1f} s" + (f"; wrote {args.json}" if args.json else ""))
    failed = [p for p in report["throughput"].values() for r in p["rows"].values() if "error" in r]
    return 1 if failed or "error" in report.get("fit", {}) else 0


if __name__ == "__main__":
    sys.exit(main())
