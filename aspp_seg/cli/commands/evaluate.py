"""``aspp-seg evaluate``: scores a folder of predicted label maps against ground truth.

No model is involved, so results from any method can be scored. Files are matched by
name; per-class IoU and mIoU follow the Cityscapes benchmark definitions (the same
numbers as cityscapesscripts' ``evalPixelLevelSemanticLabeling`` on Cityscapes-format
folders) and go through the same `aspp_seg.evaluation.metrics.scores` as validation and test.

    aspp-seg evaluate --gt data/cityscapes/gtFine/val --pred results/labelIds
    aspp-seg evaluate --gt valannot --pred preds --format camvid --out eval/
    aspp-seg evaluate --gt val/masks --pred preds --format data/mine/classes.yaml
    aspp-seg evaluate --gt gt/ --pred preds --format my_data      # your data set file
    aspp-seg evaluate --gt valannot --pred preds --format camvid --boundary  # + Boundary IoU

The formats come from the data set files (`aspp_seg.data.datasets`); the scoring is
`aspp_seg.evaluation.folder`. ``--out`` and ``--json`` are checked before any file is
scored: neither may name one of the ground-truth or prediction files read (nor may
``--out`` hold one under the names it writes), ``--out`` is a folder and ``--json`` a
file. Each file is written complete or not at all.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from jsonargparse import ArgumentParser

from aspp_seg.data.datasets import find_format, known_formats
from aspp_seg.errors import UsageError
from aspp_seg.evaluation.folder import evaluate_boundaries, evaluate_pairs, match_files


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
    parser.add_argument("--boundary", type=bool, nargs="?", const=True, default=False,
                        help="also score Boundary IoU (d = 2% of the image diagonal) and the "
                        "trimap IoU (2, 4, 8, 16 px around truth boundaries), as validate "
                        "does; imports torch, so it takes longer")  # fmt: skip
    return parser


def check_outputs(args, inputs: list[Path]) -> None:
    """Refuses ``--out`` and ``--json`` paths that cannot be written or would overwrite
    one of the `inputs`, before any file is scored.

    Raises:
        UsageError: naming the option.
    """
    from aspp_seg.data.io import refuse_overwriting  # OpenCV and PIL: not for --help
    from aspp_seg.evaluation.reports import boundary_files, result_files

    if args.out:
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UsageError(
                f"--out {args.out} is a file; --out names a folder for the result files "
                f"({args.stem}.md, .csv, _confusion.npy, _confusion.png)"
            )
        outputs = result_files(args.out, args.stem)
        outputs += boundary_files(args.out, args.stem) if args.boundary else []
        refuse_overwriting(outputs, inputs, f"--out {args.out}")
    if args.json:
        if Path(args.json).is_dir():
            raise UsageError(f"--json {args.json} is a folder; name the JSON file to write")
        refuse_overwriting([args.json], inputs, "--json")


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    from aspp_seg.data.io import replacing
    from aspp_seg.evaluation.reports import (
        iou_markdown,
        save_boundary_results,
        save_results,
        trimap_table,
    )

    fmt = find_format(args.format)
    pairs, extra = match_files(args.gt, args.pred, fmt)
    check_outputs(args, [path for pair in pairs for path in pair] + extra)
    start = time.perf_counter()
    result, confusion = evaluate_pairs(pairs, fmt, workers=args.workers)
    if args.boundary:
        result.update(evaluate_boundaries(pairs, fmt, workers=args.workers))
    seconds = time.perf_counter() - start
    names = fmt.class_names
    if extra:
        print(
            f"note: {len(extra)} predictions have no ground truth and were ignored "
            f"(first: {extra[0]})",
            file=sys.stderr,
        )
    print(f"{len(pairs)} image pairs scored in {seconds:.2f} s ({args.format} format)")
    print(iou_markdown(result["iou"], result["miou"], names))
    print(f"mIoU {100 * result['miou']:.2f}  pixel accuracy {100 * result['pixel_acc']:.2f}")
    if args.boundary:
        bounds = result["boundary"]
        print(f"\nBoundary IoU (%, d = {bounds['d']}):")
        print(iou_markdown(bounds["iou"], bounds["miou"], names))
        print("trimap IoU (%, pixels within the band of a truth boundary):")
        print(trimap_table(result["trimap"], names))
    if args.out:
        for path in save_results(args.out, args.stem, result, confusion, names):
            print(f"wrote {path}")
        for path in save_boundary_results(args.out, args.stem, result, names):
            print(f"wrote {path}")
    if args.json:
        summary = {
            "format": args.format,
            "pairs": len(pairs),
            "seconds": seconds,
            "miou": result["miou"],
            "pixel_acc": result["pixel_acc"],
            "iou": {
                n: (None if v != v else float(v)) for n, v in zip(names, result["iou"], strict=True)
            },
            "extra": [str(p) for p in extra],
        }
        if args.boundary:
            bounds, trimap = result["boundary"], result["trimap"]
            summary["boundary_d"] = bounds["d"]
            summary["boundary_miou"] = bounds["miou"]
            summary["boundary_iou"] = {
                n: (None if v != v else float(v)) for n, v in zip(names, bounds["iou"], strict=True)
            }
            summary["trimap_miou"] = {
                str(w): (None if v != v else float(v))
                for w, v in zip(trimap["widths"], trimap["miou"], strict=True)
            }
        with replacing(args.json) as staged:
            staged.write_text(json.dumps(summary, indent=2) + "\n")
