"""Table 3 (per-class val Boundary IoU, and the thin classes' region IoU, Boundary IoU
and trimap IoU side by side) from hand-made run records with known numbers, through
``--collect``: its rows hold those numbers, their means and sds; a run without boundary
records is ``-``; a folder where no run has them gets no table3.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import plans, runner, table1, tables

CLASSES = ("road", "pole", "pedestrian")  # pole and pedestrian are thin (tables.THIN)

# label -> val IoU, Boundary IoU, trimap IoU at 2 px and 4 px (%, per class); None: a run
# evaluated before the boundary metric existed
RECORDS = {
    "dl1_seed0": ((90, 10, 30), (60, 8, 20), ((50, 5, 15), (55, 7, 18))),
    "dl1_seed1": ((92, 16, 34), (64, 12, 26), ((52, 6, 19), (57, 9, 22))),
    "dl2_seed0": ((91, 20, 40), (62, 18, 33), ((51, 11, 25), (56, 14, 28))),
    "dl2_seed1": ((93, 24, 44), None, None),
}
COMMAND = ["--configs", "dl1", "dl2", "--seeds", "0", "1", "--data", "demo", "--budget",
           "tiny", "--collect"]  # fmt: skip


def _csv(values, first: tuple[str, ...] = ()) -> str:
    return ",".join([*first, *(f"{v:.4f}" for v in (*values, np.mean(values)))]) + "\n"


def _write_records(out, records) -> None:
    """A finished run's records (`runner.kept_scores`: finished.json at the budget, the
    evaluation files of that step), with the boundary CSVs where given."""
    head = ",".join([*CLASSES, "mIoU"]) + "\n"
    for label, (iou, boundary, trimap) in records.items():
        fit, folder = out / "runs" / label / "fit", out / "runs" / label / "eval"
        fit.mkdir(parents=True)
        folder.mkdir()
        np.save(folder / runner.PER_IMAGE, np.eye(3, dtype=np.int64)[None].repeat(2, 0))
        (folder / runner.IMAGES).write_text("a\nb\n")
        for split in runner.SPLITS:
            (folder / f"{split}_iou.csv").write_text(head + _csv(iou))
        if boundary is not None:
            (folder / runner.BOUNDARY_CSV).write_text(head + _csv(boundary))
            rows = [_csv(v, (str(w),)) for w, v in zip((2, 4), trimap, strict=True)]
            (folder / runner.TRIMAP_CSV).write_text("band (px)," + head + "".join(rows))
        (folder / runner.EVALUATED).write_text(json.dumps({"step": plans.TINY_STEPS}))
        (fit / runner.FINISHED).write_text(json.dumps({"steps": plans.TINY_STEPS}))


def _rows(text: str, first: str) -> dict[tuple[str, str], list[str]]:
    """The rows of the Markdown table whose header starts with `first`, by first two cells."""
    lines = text.split(f"| {first} |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return {(c[0], c[1]): c[2:] for c in cells}


def test_table3_holds_the_records_numbers_their_means_and_sds(tmp_path):
    out = tmp_path / "study"
    _write_records(out, RECORDS)
    table1.run([*COMMAND, "--out", str(out)])
    text = (out / "table3.md").read_text()

    per_class = _rows(text, "Method")  # table1's layout: road, pole, pedestrian, mIoU
    assert per_class[("DL-1", "mean ± sd, 2 seeds")] == [
        "62.00 ± 2.83", "10.00 ± 2.83", "23.00 ± 4.24", "31.67 ± 3.30"]  # fmt: skip
    assert per_class[("DL-1", "dl1_seed0")] == ["60.00", "8.00", "20.00", "29.33"]
    assert per_class[("DL-1", "dl1_seed1")] == ["64.00", "12.00", "26.00", "34.00"]
    # dl2_seed1 predates the metric: "-", and left out of DL-2's mean
    assert per_class[("DL-2", "mean ± sd, 1 of 2 seeds")] == ["62.00", "18.00", "33.00", "37.67"]
    assert per_class[("DL-2", "dl2_seed1")] == ["-"] * 4
    assert "No boundary records (evaluated before the metric existed): dl2_seed1." in text

    thin = _rows(text, "Class")  # n, IoU, Boundary IoU, trimap IoU at the narrowest band
    assert "| Class | Method | n | IoU | Boundary IoU | trimap IoU, 2 px |" in text
    assert list(thin) == [("pole", "DL-1"), ("pole", "DL-2"), ("pedestrian", "DL-1"),
                          ("pedestrian", "DL-2")]  # fmt: skip
    assert thin[("pole", "DL-1")] == ["2", "13.00 ± 4.24", "10.00 ± 2.83", "5.50 ± 0.71"]
    assert thin[("pedestrian", "DL-1")] == ["2", "32.00 ± 2.83", "23.00 ± 4.24", "17.00 ± 2.83"]
    # the IoU over the same run as the boundary scores: dl2_seed0's, not dl2_seed1's
    assert thin[("pole", "DL-2")] == ["1", "20.00", "18.00", "11.00"]
    assert thin[("pedestrian", "DL-2")] == ["1", "40.00", "33.00", "25.00"]

    saved = json.loads((out / "results.json").read_text())["boundary"]
    assert saved["runs"]["dl2_seed1"] is None and saved["without"] == ["dl2_seed1"]
    assert saved["runs"]["dl1_seed0"]["iou"] == pytest.approx([0.60, 0.08, 0.20])
    assert saved["runs"]["dl1_seed0"]["trimap"]["widths"] == [2, 4]
    assert saved["runs"]["dl1_seed0"]["trimap"]["iou"][1] == pytest.approx([0.55, 0.07, 0.18])
    assert saved["thin_trimap_width"] == 2
    pole = saved["thin"][0]
    assert (pole["class"], pole["group"]) == ("pole", "dl1")
    assert pole["runs"] == ["dl1_seed0", "dl1_seed1"]
    assert pole["boundary"] == pytest.approx({"n": 2, "mean": 0.10, "sd": 0.04 / np.sqrt(2)})
    assert pole["trimap"] == pytest.approx({"n": 2, "mean": 0.055, "sd": 0.01 / np.sqrt(2)})
    assert "Per-class Boundary IoU and the thin classes: table3.md." in (
        out / "table1.md").read_text()  # fmt: skip

    # collected again: the same bytes
    written = {p: p.read_bytes() for p in out.glob("*") if p.suffix in (".md", ".json")}
    assert len(written) == 4
    table1.run([*COMMAND, "--out", str(out)])
    assert {p: p.read_bytes() for p in written} == written


def test_no_table3_where_no_run_has_boundary_records(tmp_path):
    """A folder of runs that all predate the metric: no table3.md (a stale one goes) and
    table1.md says why; results.json's ``boundary`` is null."""
    out = tmp_path / "old"
    _write_records(out, {label: (iou, None, None) for label, (iou, _, _) in RECORDS.items()})
    (out / "table3.md").write_text("a table of records that are gone\n")
    table1.run([*COMMAND, "--out", str(out)])
    assert not (out / "table3.md").exists()
    assert "No Boundary IoU (table3.md): no run here has boundary records" in (
        out / "table1.md").read_text()  # fmt: skip
    assert json.loads((out / "results.json").read_text())["boundary"] is None


def test_thin_classes_leave_out_a_method_without_a_finished_run():
    """A failed run has a row of Table 3 with its reason, not one of the thin classes."""
    scores = {"columns": list(CLASSES), "iou": np.array([0.9, 0.1, 0.3]), "miou": 13 / 30}
    results = {
        "dl1": {"config": "dl1", "group": "dl1", "state": "finished", "val": scores,
                "boundary": scores},
        "bad": {"config": "bad", "group": "bad", "state": "failed", "reason": "diverged"},
    }  # fmt: skip
    rows = tables.thin_classes(results, {})
    assert [(r["class"], r["group"]) for r in rows] == [("pole", "dl1"), ("pedestrian", "dl1")]
    assert rows[0]["trimap"] is None  # no trimap records: no band to read
    text = tables.table3(results, {})
    assert "| bad | bad: failed: diverged | - | - | - | - |" in text
    assert "| Class | Method | n | IoU | Boundary IoU | trimap IoU |" in text
