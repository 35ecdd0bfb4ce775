"""Times `aspp-seg evaluate` against cityscapesscripts' evalPixelLevelSemanticLabeling.

Writes `--count` synthetic full-size (1024 x 2048) Cityscapes labelId maps and
predictions (blocky scenes, wrong blocks, pixel noise) under `--root` once, then scores
them with both tools and prints the times and the largest IoU difference:

    python benchmarks/evaluate_speed.py --root /tmp/cs500 --count 500

With ``--commands true`` it also times both as whole commands, each a fresh process
(start-up and imports included): ``aspp-seg evaluate`` against a Python process that
imports cityscapesscripts and scores the same files:

    python benchmarks/evaluate_speed.py --root /tmp/cs30 --count 30 --commands true
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from jsonargparse import ArgumentParser

from aspp_seg.data.datasets.cityscapes import CLASSES as CITYSCAPES_CLASSES
from aspp_seg.evaluation.folder import evaluate_folders

# synthetic scenes shared with tests/evaluation/test_evaluate.py (benchmarks import nothing
# from tests)
CITIES = ("aachen", "bochum")
TRAIN_ID, MOTORCYCLE_ID = 31, 32  # labelIds: absent everywhere / predicted but never true


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_cityscapes_pairs(root: Path, count: int, *, height=1024, width=2048, seed=0):
    """`count` synthetic full-size labelId maps in the gtFine layout, and predictions
    named as for the test server: blocky scenes over all 34 labelIds (ignored ones
    included), predictions with wrong blocks, void labelIds and pixel noise."""
    rng = np.random.default_rng(seed)
    true_ids = np.array([i for i in range(34) if i not in (TRAIN_ID, MOTORCYCLE_ID)])
    pred_ids = np.array([i for i in range(34) if i != TRAIN_ID])
    gt_dir, pred_dir = root / "gtFine" / "val", root / "pred"
    for n in range(count):
        city = CITIES[n % len(CITIES)]
        stem = f"{city}_{n:06d}_000019"
        blocks = rng.choice(true_ids, size=(height // 64, width // 64)).astype(np.uint8)
        gt = np.kron(blocks, np.ones((64, 64), dtype=np.uint8))
        wrong = rng.random(blocks.shape) < 0.3
        pred_blocks = np.where(wrong, rng.choice(pred_ids, size=blocks.shape), blocks)
        pred = np.kron(pred_blocks.astype(np.uint8), np.ones((64, 64), dtype=np.uint8))
        noise = rng.random(gt.shape) < 0.02
        pred[noise] = rng.choice(pred_ids, size=int(noise.sum()))
        _write(gt_dir / city / f"{stem}_gtFine_labelIds.png", gt)
        _write(pred_dir / city / f"{stem}_leftImg8bit.png", pred)
    return gt_dir, pred_dir


def _official(gt_dir: Path, pred_dir: Path) -> dict:
    """cityscapesscripts' own pixel-level evaluation of the same files."""
    if not hasattr(np, "in1d"):  # removed in NumPy 2.4; the official script still calls it
        np.in1d = np.isin
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    args.evalInstLevelScore = False  # needs *_instanceIds.png; nIoU is not compared
    args.JSONOutput = False
    args.quiet = True
    args.predictionPath, args.predictionWalk = str(pred_dir), None
    gts = sorted(str(p) for p in gt_dir.rglob("*_gtFine_labelIds.png"))
    preds = [official.getPrediction(args, gt) for gt in gts]
    return official.evaluateImgLists(preds, gts, args)


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=str, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--official", type=bool, default=True)
    parser.add_argument("--commands", type=bool, default=False, help="also time whole commands")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (the best counts)")
    args = parser.parse_args()
    root = Path(args.root)
    gt_dir, pred_dir = root / "gtFine" / "val", root / "pred"
    if len(list(gt_dir.rglob("*_gtFine_labelIds.png"))) != args.count:
        start = time.perf_counter()
        gt_dir, pred_dir = make_cityscapes_pairs(root, args.count)
        print(f"generated {args.count} pairs in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    ours = evaluate_folders(gt_dir, pred_dir, format="cityscapes")
    ours_s = time.perf_counter() - start
    print(f"aspp-seg evaluate: {ours['pairs']} pairs in {ours_s:.2f} s, mIoU {ours['miou']:.6f}")
    if not args.official:
        return
    start = time.perf_counter()
    reference = _official(gt_dir, pred_dir)
    official_s = time.perf_counter() - start
    diff = max(
        abs(iou - reference["classScores"][name])
        for name, iou in zip(CITYSCAPES_CLASSES, ours["iou"], strict=True)
        if not math.isnan(iou)
    )
    print(
        f"cityscapesscripts: {official_s:.2f} s, mIoU {reference['averageScoreClasses']:.6f}; "
        f"max |IoU difference| {diff:.2e}; speed-up {official_s / ours_s:.1f}x"
    )
    if args.commands:
        _time_commands(gt_dir, pred_dir, args.repeat)


def _seconds(command: list[str], repeat: int) -> float:
    """The best wall time of `repeat` runs of `command` (each a fresh process)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def _time_commands(gt_dir: Path, pred_dir: Path, repeat: int) -> None:
    """Both tools as whole commands: a new process each, imports and start-up included."""
    ours = [shutil.which("aspp-seg") or "aspp-seg", "evaluate", "--gt", str(gt_dir),
            "--pred", str(pred_dir), "--format", "cityscapes"]  # fmt: skip
    here = Path(__file__).resolve().parent
    official = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(here)!r}); "
                "from evaluate_speed import _official; from pathlib import Path; "
                f"_official(Path({str(gt_dir)!r}), Path({str(pred_dir)!r}))"]  # fmt: skip
    ours_s, official_s = _seconds(ours, repeat), _seconds(official, repeat)
    print(
        f"whole commands (best of {repeat}): aspp-seg evaluate {ours_s:.2f} s, "
        f"cityscapesscripts {official_s:.2f} s; ratio {ours_s / official_s:.2f}"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
