"""`aspp-seg prepare-cityscapes ROOT`: write ``*_labelTrainIds.png`` from the polygons.

Runs cityscapesscripts' own conversion (`json2labelImg` with the ``trainIds``
encoding, what its `createTrainIdLabelImgs` script does) over every
``gtFine/*/*/*_gtFine_polygons.json`` (and ``gtCoarse/`` when present) in parallel,
skips files already converted (a second run does no work), and verifies each result
before it is put in place: only trainIds values, and equal to the trainId mapping of
the ``*_labelIds.png`` shipped beside them. A ``*_labelTrainIds.png`` that is already
there is never replaced by a different one unless ``--overwrite`` is given (with the
same pixels it is left untouched), and a wrong result is never written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from jsonargparse import ActionYesNo, ArgumentParser

from aspp_seg.data.parallel import parallel_map
from aspp_seg.errors import DataError

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


def _staged(out: Path) -> Path:
    return out.with_name(out.name[: -len(".png")] + ".part.png")


def convert(job: tuple[Path, bool]) -> tuple[str, str | None]:
    """Converts one polygon file, verifies the result and puts it in place.

    Args:
        job: (polygon file, whether a different existing labelTrainIds may be replaced).

    Returns:
        (what happened, the problem line or None): ``written``, ``replaced``, ``same``
        (an identical file is there, left untouched), ``differs`` (a different file is
        there, left untouched), ``failed`` or ``wrong`` (nothing written).
    """
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    from aspp_seg.data.io import read_label

    polygons, overwrite = job
    out = target(polygons)
    tmp = _staged(out)
    try:
        try:
            json2labelImg(str(polygons), str(tmp), "trainIds")
        except (Exception, SystemExit) as error:  # json2labelImg exits on unknown labels
            return "failed", f"cannot convert {polygons}: {error!r}"
        problem = _verify(tmp, polygons)
        if problem is not None:
            return "wrong", problem
        if out.exists():
            try:
                same = np.array_equal(read_label(out), read_label(tmp))
            except DataError:
                same = False  # an unreadable file is replaced only with --overwrite too
            if same:
                return "same", None
            if not overwrite:
                return "differs", f"{out} differs from the trainIds of {polygons.name}"
            os.replace(tmp, out)
            return "replaced", None
        os.replace(tmp, out)
        return "written", None
    finally:
        tmp.unlink(missing_ok=True)


def _verify(path: Path, polygons: Path) -> str | None:
    """Checks the labelTrainIds image `path` converted from `polygons`; the problem line
    (naming the file's final name), or None."""
    from aspp_seg.data.datasets.cityscapes import TRAIN_IDS, to_train_ids
    from aspp_seg.data.io import read_label
    from aspp_seg.data.labels import label_values

    out = target(polygons)
    try:
        train_ids = read_label(path)
    except DataError as error:
        return str(error).replace(str(path), str(out))
    problem = TRAIN_IDS.problem(label_values(train_ids), out)
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


def verify(polygons: Path) -> str | None:
    """Checks the existing labelTrainIds file of `polygons`; the problem line, or None."""
    return _verify(target(polygons), polygons)


def _run(function, files: list[Path], workers: int, desc: str) -> list[str]:
    """Maps `function` over `files` in parallel; the non-None results, sorted."""
    results = parallel_map(function, files, workers=workers, desc=desc, serial_below=2)
    return sorted(r for r in results if r is not None)


def prepare(
    root: str | Path,
    *,
    workers: int = 1,
    force: bool = False,
    overwrite: bool = False,
    verify_all: bool = False,
) -> dict:
    """Converts the polygon files under `root`, verifying each result before writing it.

    Args:
        root: the Cityscapes root.
        workers: parallel processes.
        force: convert files already done (labelTrainIds newer than its polygons) again.
        overwrite: replace an existing labelTrainIds file whose pixels differ from the
            conversion; without it such files are left as they are and reported.
        verify_all: also verify the labelTrainIds files that were not converted now.

    Returns:
        ``{"found", "converted", "skipped", "verified"}`` file counts (``converted``:
        files written or replaced now).

    Raises:
        DataError: no polygon files, a conversion failed, a result is wrong (not
            written), or existing files differ and `overwrite` is off (left as they were).
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
    jobs = [(f, overwrite) for f in todo]
    outcomes = list(parallel_map(convert, jobs, workers=workers, desc="json -> labelTrainIds",
                                 serial_below=2))  # fmt: skip
    by_kind: dict[str, list[str]] = {}
    for kind, line in outcomes:
        by_kind.setdefault(kind, []).append(line)
    failed = sorted(by_kind.get("failed", []))
    if failed:
        raise DataError(f"{len(failed)} of {len(todo)} conversions failed; first: {failed[0]}")
    wrong = sorted(by_kind.get("wrong", []))
    if wrong:
        raise DataError(
            f"{len(wrong)} of {len(todo)} labelTrainIds are wrong; first: {wrong[0]} "
            "(the wrong ones were not written)"
        )
    differs = sorted(by_kind.get("differs", []))
    if differs:
        raise DataError(
            f"{len(differs)} existing labelTrainIds differ from their polygons' conversion "
            f"and were left as they are (first: {differs[0]}); --overwrite replaces them"
        )
    rest = sorted(set(files) - set(todo)) if verify_all else []
    bad = _run(verify, rest, workers, "verify")
    if bad:
        raise DataError(f"{len(bad)} of {len(rest)} labelTrainIds are wrong; first: {bad[0]}")
    checked = len(todo) + len(rest)
    if checked:
        print(f"verified {checked} labelTrainIds (trainIds only, equal to their labelIds)")
    converted = len(by_kind.get("written", [])) + len(by_kind.get("replaced", []))
    return {
        "found": len(files),
        "converted": converted,
        "skipped": len(files) - converted,
        "verified": checked,
    }


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="aspp-seg prepare-cityscapes",
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
        "--overwrite",
        action=ActionYesNo,
        default=False,
        help="replace existing labelTrainIds files that differ from the conversion",
    )
    parser.add_argument(
        "--verify_all",
        action=ActionYesNo,
        default=False,
        help="verify every labelTrainIds file, not only those written now",
    )
    args = parser.parse_args(argv)
    prepare(
        args.root,
        workers=args.workers,
        force=args.force,
        overwrite=args.overwrite,
        verify_all=args.verify_all,
    )
