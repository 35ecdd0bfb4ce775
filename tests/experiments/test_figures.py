"""The sweep's figures: written from records alone, the same bytes every time."""

from __future__ import annotations

import math

import pytest

from experiments import figures


def _results(tmp_path, shift: float = 0.0) -> dict[str, dict]:
    results = {}
    for group, base in (("dl1", 0.5), ("dl2", 0.55)):
        for seed in (0, 1, 2):
            label = f"{group}_seed{seed}"
            iou = [base + shift + 0.01 * seed, 0.2 + 0.01 * seed, 0.9]
            results[label] = {"group": group, "seed": seed, "state": "finished",
                              "val": {"columns": ["road", "pole", "sky"], "iou": iou,
                                      "miou": sum(iou) / 3}}  # fmt: skip
            fit = tmp_path / "runs" / label / "fit"
            fit.mkdir(parents=True, exist_ok=True)
            rows = "".join(f"0,,,{s},{2.0 / (1 + s / 10)}\n" for s in range(9, 60, 10))
            (fit / "metrics.csv").write_text("epoch,lr-SGD/default,x,step,train/loss\n" + rows)
    results["dl3_seed0"] = {"group": "dl3", "seed": 0, "state": "failed", "reason": "diverged"}
    return results


def test_figures_are_written_as_png_and_svg_the_same_bytes_each_time(tmp_path):
    results = _results(tmp_path)
    written = figures.write_figures(results, tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{stem}.{ext}" for stem in ("val_miou", "class_iou",
                           "learning_curves") for ext in ("png", "svg"))  # fmt: skip
    first = {p.name: p.read_bytes() for p in written}
    assert all(first[n].startswith(b"\x89PNG") for n in names if n.endswith(".png"))
    assert all(b"<dc:date>" not in first[n] for n in names if n.endswith(".svg"))
    figures.write_figures(results, tmp_path)
    assert {p.name: p.read_bytes() for p in written} == first
    # the figure follows the records: another result, other bytes
    figures.write_figures(_results(tmp_path, shift=0.1), tmp_path)
    assert (tmp_path / "val_miou.png").read_bytes() != first["val_miou.png"]


def test_levels_figure_and_nothing_without_scores(tmp_path):
    levels = [
        ("aspp_input=11x15", _results(tmp_path)),
        ("aspp_input=23x30", _results(tmp_path, 0.05)),
    ]
    written = figures.write_level_figure(levels, tmp_path)
    assert sorted(p.name for p in written) == ["levels.png", "levels.svg"]
    assert (
        figures.write_figures({"dl1_seed0": {"group": "dl1", "state": "running"}}, tmp_path / "x")
        == []
    )


def test_seed_interval_is_the_t_interval_of_the_mean():
    low, high = figures.seed_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(2) at 97.5 %, sd 1
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    assert figures.seed_interval([1.0]) is None
