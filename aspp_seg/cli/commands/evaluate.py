"""``aspp-seg evaluate``: scores a folder of predicted label maps against ground truth.

No model is involved, so results from any method can be scored. Files are matched by
name; per-class IoU and mIoU follow the Cityscapes benchmark definitions (the same
numbers as cityscapesscripts' ``evalPixelLevelSemanticLabeling`` on Cityscapes-format
folders) and go through the same `aspp_seg.evaluation.metrics.scores` as validation and test.

    aspp-seg evaluate --gt data/cityscapes/gtFine/val --pred results/labelIds
    aspp-seg evaluate --gt valannot --pred preds --format camvid --out eval/
    aspp-seg evaluate --gt val/masks --pred preds --format data/mine/classes.yaml
    aspp-seg evaluate --gt gt/ --pred preds --format my_data      # your data set file

The formats come from the data set files (`aspp_seg.data.datasets`); the scoring is
`aspp_seg.evaluation.folder`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from jsonargparse import ArgumentParser

from aspp_seg.data.datasets import known_formats
from aspp_seg.evaluation.folder import evaluate_folders

NAME = "evaluate"
HELP = "score a folder of predicted label maps against ground truth (no model needed)"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="aspp-seg evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=str, required=True, help="folder of ground-truth label maps")
    parser.add_argument("--pred", type=str, required=True, help="folder of predicted label maps")
    formats = "; ".join(f"{fmt.name}: {fmt.help}" for fmt in known_formats().values())
    parser.add_argument(
        "--format",
        type=str,
        default="cityscapes",
        help=f"{formats}; a class YAML (a folder data set's data.classes): masks of its "
        "classes; or a data set file of your own, as a module path (my_data) or a .py "
        "file, :NAME picking one of its FORMATS. Files pair by name.",
    )
    parser.add_argument("--out", type=str, help="folder for <stem>.md/.csv/_confusion.npy/.png")
    parser.add_argument("--stem", type=str, default="evaluate", help="file name stem in --out")
    parser.add_argument("--json", type=str, help="also write the scores to this JSON file")
    parser.add_argument("--workers", type=int, help="reading threads (default: CPU count)")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    from aspp_seg.evaluation.reports import iou_markdown, save_results

    start = time.perf_counter()
    result = evaluate_folders(args.gt, args.pred, format=args.format, workers=args.workers)
    seconds = time.perf_counter() - start
    names = result["class_names"]
    if result["extra"]:
        print(
            f"note: {len(result['extra'])} predictions have no ground truth and were ignored "
            f"(first: {result['extra'][0]})",
            file=sys.stderr,
        )
    print(f"{result['pairs']} image pairs scored in {seconds:.2f} s ({args.format} format)")
    print(iou_markdown(result["iou"], result["miou"], names))
    print(f"mIoU {100 * result['miou']:.2f}  pixel accuracy {100 * result['pixel_acc']:.2f}")
    if args.out:
        for path in save_results(args.out, args.stem, result, result["confusion"], names):
            print(f"wrote {path}")
    if args.json:
        summary = {
            "format": args.format,
            "pairs": result["pairs"],
            "seconds": seconds,
            "miou": result["miou"],
            "pixel_acc": result["pixel_acc"],
            "iou": {
                n: (None if v != v else float(v)) for n, v in zip(names, result["iou"], strict=True)
            },
            "extra": [str(p) for p in result["extra"]],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
