"""`aspp-seg prepare-cityscapes ROOT`: write ``*_labelTrainIds.png`` from the polygons.

Runs cityscapesscripts' own conversion (`json2labelImg` with the ``trainIds``
encoding, what its `createTrainIdLabelImgs` script does) over every
``gtFine/*/*/*_gtFine_polygons.json`` (and ``gtCoarse/`` when present) in parallel,
skips files already converted (a second run does no work), writes each file
atomically, then verifies the new files: only trainIds values, and equal to the
trainId mapping of the ``*_labelIds.png`` shipped beside them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from jsonargparse import ActionYesNo, ArgumentParser

from aspp_seg.data.parallel import parallel_map
from aspp_seg.errors import DataError

NAME = "prepare-cityscapes"
HELP = "write Cityscapes *_labelTrainIds.png from the polygon files (parallel, idempotent)"

POLYGONS = "_polygons.json"
TRAIN_IDS = "_labelTrainIds.png"
LABEL_IDS = "_labelIds.png"


def polygon_files(root: Path) -> list[Path]:
    """Every ``*_gt{Fine,Coarse}_polygons.json`` under `root`, sorted."""
    files: list[Path] = []
    for annotation in ("gtFine", "gtCoarse"):
        files += sorted((root / annotation).glob(f"*/*/*_{annotation}{POLYGONS}"))
    return files


def target(polygons: Path) -> Path:
    return polygons.with_name(polygons.name[: -len(POLYGONS)] + TRAIN_IDS)


def is_done(polygons: Path) -> bool:
    """Converted already: the label file exists and is not older than its polygons."""
    out = target(polygons)
    return out.is_file() and out.stat().st_mtime >= polygons.stat().st_mtime


def convert(polygons: Path) -> str | None:
    """Writes the labelTrainIds image of one polygon file; the error line, or None."""
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    out = target(polygons)
    tmp = out.with_name(out.name[: -len(".png")] + ".part.png")
    try:
        json2labelImg(str(polygons), str(tmp), "trainIds")
    except (Exception, SystemExit) as error:  # json2labelImg exits on unknown labels
        tmp.unlink(missing_ok=True)
        return f"cannot convert {polygons}: {error!r}"
    os.replace(tmp, out)
    return None


def verify(polygons: Path) -> str | None:
    """Checks one converted file; the problem line, or None."""
    from aspp_seg.data.io import read_label
    from aspp_seg.data.labels import CITYSCAPES_TRAIN_IDS, label_values, to_train_ids

    out = target(polygons)
    try:
        train_ids = read_label(out)
    except DataError as error:
        return str(error)
    problem = CITYSCAPES_TRAIN_IDS.problem(label_values(train_ids), out)
    if problem is not None:
        return problem
    label_ids_path = polygons.with_name(polygons.name[: -len(POLYGONS)] + LABEL_IDS)
    if label_ids_path.is_file():
        expected = to_train_ids(read_label(label_ids_path))
        if expected.shape != train_ids.shape:
            sizes = f"{train_ids.shape[::-1]} but {label_ids_path} is {expected.shape[::-1]}"
            return f"{out} is {sizes}"
        differ = int(np.count_nonzero(expected != train_ids))
        if differ:
            return f"{out} differs from the trainIds of {label_ids_path} in {differ} pixels"
    return None


def _run(function, files: list[Path], workers: int, desc: str) -> list[str]:
    """Maps `function` over `files` in parallel; the non-None results, sorted."""
    results = parallel_map(function, files, workers=workers, desc=desc, serial_below=2)
    return sorted(r for r in results if r is not None)


def prepare(
    root: str | Path, *, workers: int = 1, force: bool = False, verify_all: bool = False
) -> dict:
    """Converts the polygon files under `root` and verifies the results.

    Returns:
        ``{"found", "converted", "skipped", "verified"}`` file counts.

    Raises:
        DataError: no polygon files, a conversion failed, or a result is wrong.
    """
    root = Path(root)
    files = polygon_files(root)
    if not files:
        raise DataError(
            f"no *_gtFine_polygons.json under {root}/gtFine/<split>/<city>/; "
            "unpack gtFine_trainvaltest.zip into the Cityscapes root first"
        )
    todo = files if force else [f for f in files if not is_done(f)]
    print(
        f"prepare-cityscapes: {len(files)} polygon files under {root}; "
        f"{len(todo)} to convert, {len(files) - len(todo)} already done"
    )
    failed = _run(convert, todo, workers, "json -> labelTrainIds")
    if failed:
        raise DataError(f"{len(failed)} of {len(todo)} conversions failed; first: {failed[0]}")
    checked = files if verify_all else todo
    wrong = _run(verify, checked, workers, "verify")
    if wrong:
        raise DataError(
            f"{len(wrong)} of {len(checked)} labelTrainIds are wrong; first: {wrong[0]}"
        )
    if checked:
        print(f"verified {len(checked)} labelTrainIds (trainIds only, equal to their labelIds)")
    return {
        "found": len(files),
        "converted": len(todo),
        "skipped": len(files) - len(todo),
        "verified": len(checked),
    }


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog=f"aspp-seg {NAME}",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("root", type=str, help="Cityscapes root (holds gtFine/ and leftImg8bit/)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="parallel processes"
    )
    parser.add_argument(
        "--force", action=ActionYesNo, default=False, help="convert files already done again"
    )
    parser.add_argument(
        "--verify_all",
        action=ActionYesNo,
        default=False,
        help="verify every labelTrainIds file, not only those written now",
    )
    args = parser.parse_args(argv)
    prepare(args.root, workers=args.workers, force=args.force, verify_all=args.verify_all)
