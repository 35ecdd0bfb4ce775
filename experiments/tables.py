"""The study's Tables 1 and 2 as Markdown (and ``results.json``) from the runs' results.

Runs of one config at one budget are seeds of one another (a group): Table 1 gives each
group's per-class val IoU, Table 2 each run's steps, wall time, train and val mIoU and
each group's mean ± standard deviation over seeds, then every group's difference of val
mIoU to the reference group with two 95% intervals and a verdict (`experiments.stats`).
On Cityscapes the study's published rows (`experiments.study`) stand beside ours. Runs
without scores (failed, running, not run) are rows with their reason. Table 3 gives the
per-class val Boundary IoU in Table 1's layout and, for the thin classes (`THIN`), each
group's IoU, Boundary IoU and trimap IoU side by side; it is written where a run has
boundary records (runs evaluated before the metric have none: ``-``).

Across the levels of a ``--grid`` (`write_levels`): each group's val mIoU per level and,
within each level, every pair of groups (`pairwise`): one interval over seeds and val
images together (`stats.hierarchical_bootstrap`), Holm's correction over the level's
pairs (`stats.holm`) and a verdict; a group with one run gets none (no borrowed variance).

The inputs are `experiments.runner.collect`'s dicts, one per run label: ``config``,
``group``, ``seed``, ``state``, ``reason``, ``steps``, ``wall_s``, ``per_image`` (a path
or None) and, for a scored run, ``train`` / ``val`` ``{"columns", "iou", "miou"}``
(fractions, NaN where a class has no pixels) and, where it has them, ``boundary`` (the
same, of Boundary IoU) and ``trimap`` (``{"columns", "widths", "iou": W x C, "miou"}``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aspp_seg.data.datasets.cityscapes import COLUMNS
from aspp_seg.data.io import write_file
from aspp_seg.errors import ConfigError
from experiments import stats
from experiments.study import StudyRow, load_study

CONFIDENCE = 0.95
RESAMPLES = 2000


def _pct(value: float | None, *, sign: bool = False) -> str:
    """A fraction as a percentage cell; ``-`` where there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def _kept(values: Sequence[float | None]) -> list[float]:
    """`values` without None and NaN (a class without pixels in a run)."""
    return [v for v in values if v is not None and not math.isnan(v)]


def _mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` (%) over seeds, NaNs left out; one value alone."""
    kept = _kept(values)
    if not kept:
        return "-"
    if len(kept) == 1:
        return _pct(kept[0])
    return f"{100 * np.mean(kept):.2f} ± {100 * np.std(kept, ddof=1):.2f}"


def _scored(result: dict) -> bool:
    return "val" in result


def _columns(results: dict[str, dict], key: str = "val") -> list[str]:
    """The class columns that all runs scored in `key` share (none scored: no columns)."""
    columns = {tuple(r[key]["columns"]) for r in results.values() if r.get(key)}
    if len(columns) > 1:
        raise ConfigError("the runs were evaluated on different classes; tabulate them apart")
    return list(columns.pop()) if columns else []


def _on_cityscapes(results: dict[str, dict]) -> bool:
    """Whether the runs were scored on Cityscapes' 19 classes, the study's columns."""
    return _columns(results) == list(COLUMNS)


def _method(result: dict, study: dict[str, StudyRow]) -> str:
    row = study.get(result["config"])
    return row.method if row else result["group"]


def groups(results: dict[str, dict]) -> dict[str, list[str]]:
    """Group -> its finished runs' labels, in the order given (groups without a
    finished run have an empty list)."""
    found: dict[str, list[str]] = {}
    for label, result in results.items():
        found.setdefault(result["group"], [])
        if result["state"] == "finished":
            found[result["group"]].append(label)
    return found


def _status(label: str, result: dict) -> str:
    """``dl1_seed1: failed: ...`` for a run without final scores."""
    if result["state"] == "unfinished" and result.get("steps") is not None:
        return f"{label}: unfinished, step {result['steps']}"
    reason = f": {result['reason']}" if result.get("reason") else ""
    return f"{label}: {result['state']}{reason}"


def table1(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: per-class val IoU (%) of each group (mean ± sd over its seeds); on
    Cityscapes the study's row and the difference below it; then each of its runs
    (several seeds) and the runs without final scores on rows of their own."""
    return _class_table(results, study, "val")


def _class_table(results: dict[str, dict], study: dict[str, StudyRow], key: str) -> str:
    """`table1`'s layout for the per-class scores under `key` of each run (``val``: IoU,
    ``boundary``: Boundary IoU; the study's rows beside the IoU only). A finished run
    without them is ``-`` and left out of its group's mean."""
    columns = _columns(results, key)
    cityscapes = key == "val" and columns == list(COLUMNS)
    head = ["Method", "Source", *columns, "mIoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(cells: Sequence[str]) -> None:
        lines.append("| " + " | ".join(cells) + " |")

    def scores(result: dict) -> list[str]:
        run = result.get(key)
        return [_pct(v) for v in (*run["iou"], run["miou"])] if run else ["-"] * (len(columns) + 1)

    for group, labels in groups(results).items():
        members = {k: r for k, r in results.items() if r["group"] == group}
        method = _method(next(iter(members.values())), study)
        if labels:
            scored = [k for k in labels if results[k].get(key)]
            values = [[*results[k][key]["iou"], results[k][key]["miou"]] for k in scored]
            cells = ([_mean_sd(v) for v in zip(*values, strict=True)] if values
                     else ["-"] * (len(columns) + 1))  # fmt: skip
            of = "" if len(scored) == len(labels) else f" of {len(labels)}"
            source = f"this run ({labels[0]})" if len(labels) == 1 else (
                f"mean ± sd, {len(scored)}{of} seeds")  # fmt: skip
            line([method, source, *cells])
            row = study.get(members[labels[0]]["config"]) if cityscapes else None
            if row:
                with warnings.catch_warnings():  # a class without pixels in every run
                    warnings.simplefilter("ignore", RuntimeWarning)
                    means = np.nanmean(np.array(values, dtype=np.float64), axis=0)
                theirs = [v / 100 for v in (*row.iou, row.miou)]  # the study prints percentages
                line(["", "study", *(_pct(v) for v in theirs)])
                line(["", "difference", *(_pct(a - b, sign=True) for a, b in
                                          zip(means, theirs, strict=True))])  # fmt: skip
            elif cityscapes:
                line(["", "study", *["-"] * (len(columns) + 1)])
            for label in labels if len(labels) > 1 else ():  # the runs behind the mean
                line([method, label, *scores(results[label])])
        for label, result in members.items():
            if label not in labels:
                line([method, _status(label, result), *scores(result)])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- boundaries

THIN = (
    "pole", "sign/symbol", "pedestrian", "bicyclist",  # CamVid
    "Pole", "T.Light", "T.Sign", "Person", "Rider", "Bike",  # Cityscapes
)  # fmt: skip
"""The thin classes whose boundaries the paper expects large rates to blur (poles, signs,
lights) and the thin people and bicycles beside them, as the data sets' columns name them."""


def _no_boundary(results: dict[str, dict]) -> list[str]:
    """The scored runs without boundary records (evaluated before the metric existed)."""
    return [k for k, r in results.items() if _scored(r) and not r.get("boundary")]


def _narrowest(results: dict[str, dict]) -> int | None:
    """The narrowest trimap band that every run with trimap records has (None: no band)."""
    widths = [set(r["trimap"]["widths"]) for r in results.values() if r.get("trimap")]
    common = set.intersection(*widths) if widths else set()
    return min(common) if common else None


def _stat(values: Sequence[float | None]) -> dict | None:
    """``{"n", "mean", "sd"}`` (fractions; sd None for one value) of `values` without NaN."""
    kept = _kept(values)
    if not kept:
        return None
    sd = float(np.std(kept, ddof=1)) if len(kept) > 1 else None
    return {"n": len(kept), "mean": float(np.mean(kept)), "sd": sd}


def thin_classes(results: dict[str, dict], study: dict[str, StudyRow]) -> list[dict]:
    """Each thin class (`THIN`) x group with finished runs: region IoU, Boundary IoU and
    the trimap IoU at the narrowest band (`_narrowest`), each over the group's finished
    runs that have boundary records (the same runs for the three, so that they compare).

    Returns:
        ``{"class", "group", "method", "runs": labels, "iou", "boundary", "trimap"}`` per
        row, each score a `_stat` or None; classes in column order, groups as in Table 1.
    """
    columns = _columns(results, "boundary")
    width = _narrowest(results)
    rows = []
    for name in (c for c in columns if c in THIN):
        for group, labels in groups(results).items():
            if not labels:  # no finished run (failed, running): Table 1 says why
                continue
            bounded = [k for k in labels if results[k].get("boundary")]
            runs = [results[k] for k in bounded]

            def scores(key: str, runs: list[dict] = runs, name: str = name) -> list[float]:
                return [r[key]["iou"][r[key]["columns"].index(name)] for r in runs]

            trimap = [r["trimap"] for r in runs if r.get("trimap")]
            rows.append({
                "class": name, "group": group,
                "method": _method(next(r for r in results.values() if r["group"] == group),
                                  study),
                "runs": bounded,
                "iou": _stat(scores("val")), "boundary": _stat(scores("boundary")),
                "trimap": _stat([t["iou"][t["widths"].index(width)][t["columns"].index(name)]
                                 for t in trimap]) if width is not None else None,
            })  # fmt: skip
    return rows


def _cell(stat: dict | None) -> str:
    """A `_stat` as ``mean ± sd`` (%), one value alone, ``-`` for none."""
    if stat is None:
        return "-"
    if stat["sd"] is None:
        return _pct(stat["mean"])
    return f"{100 * stat['mean']:.2f} ± {100 * stat['sd']:.2f}"


def table3(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: per-class val Boundary IoU (%) in `table1`'s layout, the runs without
    boundary records named, then the thin classes' region IoU, Boundary IoU and trimap IoU
    side by side per method (`thin_classes`)."""
    text = _class_table(results, study, "boundary")
    missing = _no_boundary(results)
    text += (
        "\nBoundary IoU (Cheng et al. 2021, `aspp_seg.evaluation.boundary`): for each class, "
        "the intersection over union of the truth's and the prediction's pixels within d px "
        "of their region's contour (d = 2% of the label map's diagonal), summed over the val "
        "images; mean ± sd over seeds as in table1.md, runs without boundary records left "
        "out of the mean (`-`).\n"
    )
    if missing:
        text += (f"\nNo boundary records (evaluated before the metric existed): "
                 f"{', '.join(missing)}.\n")  # fmt: skip
    width = _narrowest(results)
    band = f"trimap IoU, {width} px" if width is not None else "trimap IoU"
    text += "\n## Thin classes: region IoU against Boundary IoU\n\n"
    rows = thin_classes(results, study)
    if not rows:
        return text + f"None of the thin classes ({', '.join(THIN)}) is a class of this data.\n"
    head = ["Class", "Method", "n", "IoU", "Boundary IoU", band]
    text += "| " + " | ".join(head) + " |\n" + "|" + "---|" * len(head) + "\n"
    for row in rows:
        cells = [row["class"], row["method"], str(len(row["runs"])), _cell(row["iou"]),
                 _cell(row["boundary"]), _cell(row["trimap"])]  # fmt: skip
        text += "| " + " | ".join(cells) + " |\n"
    trimap = ("no trimap records" if width is None else
              f"the IoU on the pixels within {width} px of a truth boundary (the DeepLab "
              "papers' trimap, its narrowest band here; every band: each run's "
              "`eval/val_trimap_iou.csv`)")  # fmt: skip
    return text + (
        "\nVal scores in %, mean ± sd over the n finished runs of each method that have "
        "boundary records (the same runs in the three columns). IoU: over the whole image, "
        f"as in table1.md; Boundary IoU: as above; trimap IoU: {trimap}. Where an object is "
        "no wider than about 2d, its band is the whole object, so its Boundary IoU is "
        "close to its IoU by construction; the trimap's narrow band is the sharper test of "
        "its edges.\n"
    )


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def table2(results: dict[str, dict], study: dict[str, StudyRow]) -> str:
    """Markdown: each run's steps, training time, train and val mIoU (%), and each
    multi-seed group's mean ± sd; on Cityscapes beside the study's Table 2."""
    cityscapes = _on_cityscapes(results)
    head = ["Method", "steps", "train time"]
    if cityscapes:
        head += ["train mIoU", "study", "difference", "val mIoU", "study", "difference"]
    else:
        head += ["train mIoU", "val mIoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    blank = ["-"] * (len(head) - 4)
    for label, result in results.items():
        first = f"{_method(result, study)} ({label})"
        wall = _minutes(result.get("wall_s"))
        if not _scored(result):
            cells = [first, "-", wall, _status(label, result).split(": ", 1)[1], *blank]
        else:
            steps = str(result.get("steps", "-"))
            if result["state"] != "finished":
                steps += " (unfinished)"
            train, val = result["train"]["miou"], result["val"]["miou"]
            cells = [first, steps, wall]
            if cityscapes:
                row = study.get(result["config"])
                s_train, s_val = (row.train_miou, row.val_miou) if row else (None, None)
                s_train = None if s_train is None else s_train / 100
                s_val = None if s_val is None else s_val / 100
                cells += [_pct(train), _pct(s_train), _diff(train, s_train),
                          _pct(val), _pct(s_val), _diff(val, s_val)]  # fmt: skip
            else:
                cells += [_pct(train), _pct(val)]
        lines.append("| " + " | ".join(cells) + " |")
    for labels in groups(results).values():
        if len(labels) < 2:
            continue
        runs = [results[k] for k in labels]
        steps = sorted({str(r["steps"]) for r in runs})
        walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
        cells = [f"{_method(runs[0], study)} (mean ± sd, {len(labels)} seeds)", "/".join(steps),
                 f"{sum(walls) / 60:.1f} min in all" if walls else "-"]  # fmt: skip
        train = _mean_sd([r["train"]["miou"] for r in runs])
        val = _mean_sd([r["val"]["miou"] for r in runs])
        cells += [train, "", "", val, "", ""] if cityscapes else [train, val]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _diff(ours: float, theirs: float | None) -> str:
    if theirs is None or math.isnan(ours):
        return "-"
    return _pct(ours - theirs, sign=True)


# ------------------------------------------------------------------ comparisons


def _per_image(results: dict[str, dict], labels: Sequence[str]) -> list[np.ndarray] | None:
    """The runs' per-image val confusion counts, when every run has them for the same
    images (else None: the bootstrap is left out)."""
    arrays, names = [], set()
    for label in labels:
        path = results[label].get("per_image")
        if path is None or not Path(path).is_file():
            return None
        images = Path(path).with_name("val_images.txt")
        names.add(images.read_text() if images.is_file() else None)
        arrays.append(np.load(path))
    if len(names) != 1 or len({a.shape for a in arrays}) != 1:
        return None
    return arrays


def compare(results: dict[str, dict], reference: str) -> dict[str, dict]:
    """Every group's difference of val mIoU to `reference`'s (fractions).

    Returns:
        group -> ``{"runs": n, "diff", "seeds": Interval or None, "images": Interval or
        None, "verdict"}``; the reference group itself and groups without a finished run
        are left out.
    """
    found = groups(results)
    ref = found.get(reference, [])
    ref_miou = [results[k]["val"]["miou"] for k in ref]
    ref_counts = _per_image(results, ref) if ref else None
    out = {}
    for group, labels in found.items():
        if group == reference or not labels or not ref:
            continue
        miou = [results[k]["val"]["miou"] for k in labels]
        seeds = stats.welch_interval(ref_miou, miou, CONFIDENCE)
        counts = _per_image(results, labels) if ref_counts is not None else None
        images = None
        if counts is not None and counts[0].shape == ref_counts[0].shape:
            images = stats.paired_bootstrap(ref_counts, counts, confidence=CONFIDENCE,
                                            resamples=RESAMPLES)  # fmt: skip
        verdict = stats.verdict([seeds, images])
        if seeds is None:  # a side with one run: its seed noise is unknown
            verdict = "no verdict: one run, no seed interval"
        out[group] = {"runs": len(labels), "diff": float(np.mean(miou) - np.mean(ref_miou)),
                      "seeds": seeds, "images": images, "verdict": verdict}  # fmt: skip
    return out


def _interval(interval: stats.Interval | None) -> str:
    if interval is None:
        return "-"
    return f"[{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]"


def comparison(results: dict[str, dict], study: dict[str, StudyRow], reference: str) -> str:
    """Markdown: each group's val mIoU against the reference's, with the intervals,
    the verdict and a note on how they were made."""
    found = groups(results)
    if not found.get(reference):
        return f"No finished run of the reference ({reference}): nothing to compare with.\n"
    differences = compare(results, reference)

    def method(group: str) -> str:
        first = next(r for r in results.values() if r["group"] == group)
        return _method(first, study)

    ref_method = method(reference)
    head = ["Method", "runs", "val mIoU", f"difference to {ref_method}",
            "95% interval, seeds", "95% interval, val images", "verdict"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, labels in found.items():
        if not labels:
            continue
        val = _mean_sd([results[k]["val"]["miou"] for k in labels])
        if group == reference:
            cells = [f"{ref_method} (reference)", str(len(labels)), val, "", "", "", ""]
        else:
            d = differences[group]
            cells = [method(group), str(len(labels)), val, _pct(d["diff"], sign=True),
                     _interval(d["seeds"]), _interval(d["images"]), d["verdict"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    n_ref = len(found[reference])
    note = (
        f"\nDifferences are in points of val mIoU (variant minus {ref_method}). Seeds: "
        "Welch's t over the runs' val mIoUs; it needs two runs on each side (a method with "
        "one run has no seed interval and no verdict: no other method's seed variance "
        "stands for its own). Val images: a paired bootstrap over the val images "
        f"({RESAMPLES} resamples, the same images for every run; each run's mIoU recomputed "
        "from its per-image confusion counts, seed means differenced; percentile interval). "
        "Verdict: better or worse when both intervals lie on one side of zero (the seed "
        "interval is required), otherwise not distinguishable."
    )
    if n_ref < 2:
        note += f" {ref_method} has {n_ref} run: give it more seeds for a seed interval."
    return "\n".join(lines) + "\n" + note + "\n"


# ------------------------------------------------------------------------ files


def caveat(data: str | None, budget: str, cityscapes: bool = True) -> str:
    """What the numbers are worth; empty for the real reproduction."""
    if not cityscapes:
        return (
            "> Not the study's data set: these rows compare the study's variants with each "
            f"other on this data at a `{budget}`-step budget (and with their seed noise), "
            "not with the study's Cityscapes numbers.\n\n"
        )
    if data != "demo" and budget == "full":
        return ""
    where = "the synthetic demo data" if data == "demo" else "Cityscapes"
    return (
        f"> **These numbers mean nothing.** They come from a `{budget}` training budget on "
        f"{where}, not from the study's protocol (40 epochs of Cityscapes fine, "
        "ResNet-101 ImageNet weights); they only show that the pipeline runs end to end. "
        "Run `--data <cityscapes root> --budget full` for the reproduction.\n\n"
    )


def _fractions(values) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def _serial(interval: stats.Interval | None) -> dict | None:
    if interval is None:
        return None
    return {"diff": interval.diff, "low": interval.low, "high": interval.high,
            "test": interval.test}  # fmt: skip


def _boundary_json(results: dict[str, dict], study: dict[str, StudyRow]) -> dict:
    """Table 3's numbers (fractions): each scored run's val Boundary IoU and trimap IoU
    (None: no records), the runs without them and the thin classes' rows."""
    runs = {}
    for label, r in results.items():
        if not _scored(r):
            continue
        b, t = r.get("boundary"), r.get("trimap")
        runs[label] = None if not b else {
            "iou": _fractions(b["iou"]), "miou": _fractions([b["miou"]])[0],
            "trimap": None if not t else {
                "widths": list(t["widths"]), "iou": [_fractions(row) for row in t["iou"]],
                "miou": _fractions(t["miou"])}}  # fmt: skip
    return {"columns": _columns(results, "boundary"), "runs": runs,
            "without": _no_boundary(results), "thin_trimap_width": _narrowest(results),
            "thin": thin_classes(results, study)}  # fmt: skip


def write_tables(
    results: dict[str, dict], out: Path, *, data: str | None, budget: str, reference: str
) -> tuple[Path, Path]:
    """Writes ``table1.md``, ``table2.md`` (with the comparison), ``table3.md`` (Boundary
    IoU, where a run has its records; else no file, and table1.md says why) and
    ``results.json``."""
    study = load_study()
    cityscapes = _on_cityscapes(results)
    note = caveat(data, budget, cityscapes)
    bounded = any(r.get("boundary") for r in results.values())
    t3 = out / "table3.md"
    if bounded:
        write_file(t3, "# Table 3: per-class Boundary IoU (%) on the validation split\n\n"
                   + note + table3(results, study))  # fmt: skip
        boundary = "Per-class Boundary IoU and the thin classes: table3.md.\n"
    else:
        t3.unlink(missing_ok=True)  # a table of records that are no longer there
        boundary = ("No Boundary IoU (table3.md): no run here has boundary records; they "
                    "were evaluated before the metric existed.\n")  # fmt: skip
    t1 = out / "table1.md"
    write_file(
        t1,
        "# Table 1: per-class IoU (%) on the validation split\n\n" + note
        + table1(results, study)
        + "\nEach method's difference to the reference, with intervals: table2.md. "
        + boundary
    )  # fmt: skip
    t2 = out / "table2.md"
    write_file(
        t2,
        "# Table 2: train and val mIoU (%)\n\n" + note + table2(results, study)
        + f"\n## Against the reference ({reference}): val mIoU\n\n"
        + comparison(results, study, reference)
    )  # fmt: skip
    runs = {}
    for label, r in results.items():
        runs[label] = {k: r.get(k) for k in ("config", "group", "seed", "state", "reason",
                                               "steps", "wall_s")}  # fmt: skip
        if _scored(r):
            for split in ("train", "val"):
                runs[label][split] = {"iou": _fractions(r[split]["iou"]),
                                      "miou": _fractions([r[split]["miou"]])[0]}  # fmt: skip
    differences = {
        group: {**d, "seeds": _serial(d["seeds"]), "images": _serial(d["images"])}
        for group, d in compare(results, reference).items()
    }
    meta = {"data": data, "budget": budget, "meaningful": not note, "reference": reference,
            "columns": _columns(results), "confidence": CONFIDENCE,
            "bootstrap_resamples": RESAMPLES}  # fmt: skip
    payload = {"meta": meta, "runs": runs, "comparison": differences,
               "boundary": _boundary_json(results, study) if bounded else None}  # fmt: skip
    write_file(out / "results.json", json.dumps(payload, indent=1))
    return t1, t2


# ------------------------------------------------------------------ across levels

ALPHA = 1 - CONFIDENCE  # the family-wise error rate of each level's comparisons


def _n(labels: Sequence) -> str:
    return f"n = {len(labels)}"


def pairwise(results: dict[str, dict], reference: str, methods: dict[str, str]) -> list[dict]:
    """Every pair of groups with finished runs in one level, the reference first, each
    other group in the order given; for each pair (a, b) the difference of val mIoU b - a.

    Where both have two runs or more: one interval over seeds and val images together
    (`stats.hierarchical_bootstrap` of the per-image counts) and its p-value; the p-values
    of the level's tested pairs are adjusted by Holm's step-down (`stats.holm`), and the
    verdict is ``better`` / ``worse`` where the adjusted p-value is below `ALPHA`, else
    ``not distinguishable at n = ...``. A pair with a one-run side gets no interval and no
    verdict (its seed noise is unknown; no other method's variance stands in) and is not
    in Holm's family.

    Returns:
        ``{"a", "b", "n_a", "n_b", "diff", "interval" (stats.Interval or None), "p",
        "p_holm", "verdict"}`` per pair, fractions.
    """
    found = {g: labels for g, labels in groups(results).items() if labels}
    order = [g for g in (reference, *found) if g in found]
    order = list(dict.fromkeys(order))
    rows = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            la, lb = found[a], found[b]
            mean = [float(np.mean([results[k]["val"]["miou"] for k in ls])) for ls in (la, lb)]
            row = {"a": a, "b": b, "n_a": len(la), "n_b": len(lb), "diff": mean[1] - mean[0],
                   "interval": None, "p": math.nan, "p_holm": math.nan}  # fmt: skip
            single = [methods[g] for g, ls in ((b, lb), (a, la)) if len(ls) < 2]
            both = _per_image(results, [*la, *lb])  # the same val images in every run
            counts = [both[: len(la)], both[len(la) :]] if both is not None else None
            if single:
                one = " and ".join(single)
                row["verdict"] = f"no verdict: {one} {'has' if len(single) == 1 else 'have'} " \
                                 "1 run (no seed interval)"  # fmt: skip
            elif counts is None:
                row["verdict"] = "no verdict: no per-image counts of the same val images"
            else:
                interval = stats.hierarchical_bootstrap(counts[0], counts[1],
                                                        confidence=CONFIDENCE,
                                                        resamples=RESAMPLES)  # fmt: skip
                row.update(interval=interval, p=interval.p)
            rows.append(row)
    tested = [row for row in rows if row["interval"] is not None]
    for row, adjusted in zip(tested, stats.holm([r["p"] for r in tested]), strict=True):
        row["p_holm"] = float(adjusted)
        if adjusted < ALPHA:
            row["verdict"] = "better" if row["diff"] > 0 else "worse"
        else:
            n = (f"n = {row['n_a']}" if row["n_a"] == row["n_b"]
                 else f"n = {row['n_b']} vs {row['n_a']}")  # fmt: skip
            row["verdict"] = f"not distinguishable at {n}"
    return rows


def _p(value: float) -> str:
    """A bootstrap p-value; 0 (no resample across zero) as below the smallest it shows."""
    if math.isnan(value):
        return "-"
    return f"< {2 / RESAMPLES:.3f}" if value == 0 else f"{value:.3f}"


def levels_table(levels: Sequence[tuple[str, dict[str, dict]]], reference: str) -> tuple[str, dict]:
    """Markdown and its JSON: val mIoU of each group x level (mean ± sd, n), each group's
    difference to the reference within each level, and every pair within each level."""
    study = load_study()
    methods: dict[str, str] = {}
    for _, results in levels:
        for result in results.values():
            methods.setdefault(result["group"], _method(result, study))
    methods.setdefault(reference, reference)  # no run of it anywhere
    order = list(dict.fromkeys([reference, *methods]))
    names = [name.replace("/", ", ") for name, _ in levels]
    head = ["Method", *names]

    def table(rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip

    found = [groups(results) for _, results in levels]
    pairs = [pairwise(results, reference, methods) for _, results in levels]
    values, rows = {}, []
    for group in order:
        cells = []
        for name, results, labels in zip(names, (r for _, r in levels), found, strict=True):
            miou = [results[k]["val"]["miou"] for k in labels.get(group, [])]
            cells.append(f"{_mean_sd(miou)} ({_n(miou)})" if miou else "-")
            if miou:
                sd = float(np.std(miou, ddof=1)) if len(miou) > 1 else None
                values.setdefault(name, {})[group] = {
                    "n": len(miou), "mean": float(np.mean(miou)), "sd": sd,
                    "runs": labels[group]}  # fmt: skip
        rows.append([methods[group] + (" (reference)" if group == reference else ""), *cells])
    lines = table(rows)

    ref = methods[reference]
    lines += ["", f"## Against {ref} within each level: val mIoU difference", ""]
    rows = []
    for group in order[1:]:
        cells = []
        for level in pairs:
            row = next((r for r in level if r["a"] == reference and r["b"] == group), None)
            if row is None:
                cells.append("-")
                continue
            interval = f" {_interval(row['interval'])}" if row["interval"] else ""
            cells.append(f"{_pct(row['diff'], sign=True)}{interval}, {row['verdict']}")
        rows.append([methods[group], *cells])
    lines += table(rows)

    lines += ["", "## Every pair within each level", ""]
    for name, level in zip(names, pairs, strict=True):
        lines += [f"### {name}", ""]
        if not level:
            lines += ["No two methods with finished runs: nothing to compare.", ""]
            continue
        head_pairs = ["Comparison", "runs", "difference", "95% interval, seeds and images",
                      "p", "p, Holm", "verdict"]  # fmt: skip
        lines += ["| " + " | ".join(head_pairs) + " |", "|" + "---|" * len(head_pairs)]
        for row in level:
            cells = [f"{methods[row['b']]} vs {methods[row['a']]}",
                     f"{row['n_b']} vs {row['n_a']}", _pct(row["diff"], sign=True),
                     _interval(row["interval"]), _p(row["p"]), _p(row["p_holm"]),
                     row["verdict"]]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        tested = sum(row["interval"] is not None for row in level)
        lines += ["", f"Holm's correction over the {tested} tested pairs of this level.", ""]
    note = (
        "Val mIoU in %, mean ± sd over each level's finished seeds (n runs); differences in "
        "points (the first method minus the second). Interval: a hierarchical bootstrap "
        f"({RESAMPLES} resamples: the val images drawn with replacement, the same for "
        "every run, then each method's seeds with replacement; every run's mIoU recomputed "
        "from its per-image confusion counts; percentile interval), which covers the seed "
        "and the image noise together; p: twice the smaller share of resampled differences "
        "on either side of zero. Verdict: better or worse where Holm's adjusted p is below "
        f"{ALPHA:.2f} (every pair of a level with two runs or more on each side is one "
        "family), otherwise not distinguishable at the numbers of runs given. A method "
        "with one run has no seed interval and gets no verdict (no other method's seed "
        "variance stands in for its own). Each level's own tables, with Welch's t and the "
        "image bootstrap as detail: `<level>/table1.md`, `<level>/table2.md`."
    )
    lines += [note, ""]
    payload = {
        "levels": names, "reference": reference, "methods": methods,
        "confidence": CONFIDENCE, "bootstrap_resamples": RESAMPLES, "alpha": ALPHA,
        "correction": "holm, over each level's tested pairs",
        "val_miou": values,
        "pairs": {name: [{**{k: v for k, v in row.items() if k != "interval"},
                          "interval": _serial(row["interval"]),
                          "p": None if math.isnan(row["p"]) else row["p"],
                          "p_holm": None if math.isnan(row["p_holm"]) else row["p_holm"]}
                         for row in level] for name, level in zip(names, pairs, strict=True)},
    }  # fmt: skip
    return "\n".join(lines), payload


def write_levels(
    levels: Sequence[tuple[str, dict[str, dict]]], out: Path, *, reference: str,
    axes: Sequence[str] = (),
) -> tuple[Path, Path]:  # fmt: skip
    """Writes ``table_levels.md`` and ``table_levels.json`` in `out`: `levels_table` of
    the grid's cells (name, `experiments.runner.collect` results), under the ``--grid``
    axes that made them."""
    text, payload = levels_table(levels, reference)
    grid = " ".join(f"`{axis}`" for axis in axes)
    md = out / "table_levels.md"
    write_file(md, f"# Val mIoU (%) across the levels of {grid or 'the grid'}\n\n{text}")
    js = out / "table_levels.json"
    write_file(js, json.dumps({"grid": list(axes), **payload}, indent=1) + "\n")
    return md, js
