"""Times `aspp-seg evaluate` against cityscapesscripts' evalPixelLevelSemanticLabeling.

Writes `--count` synthetic full-size (1024 x 2048) Cityscapes labelId maps and
predictions (blocky scenes, wrong blocks, pixel noise) under `--root` once, then scores
them with both tools and prints the times and the largest IoU difference:

    python benchmarks/evaluate_speed.py --root /tmp/cs500 --count 500
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_evaluate import _official, make_cityscapes_pairs

from aspp_seg.commands.evaluate import evaluate_folders
from aspp_seg.data.labels import CITYSCAPES_CLASSES


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=str, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--official", type=bool, default=True)
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


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
