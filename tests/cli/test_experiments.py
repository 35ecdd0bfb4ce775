"""The Table 1 / Table 2 runner's pieces: run specs, overlays, budgets and the tables'
arithmetic (end to end, killed and resumed: tests/experiments/test_sweep.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aspp_seg.data.datasets.cityscapes import COLUMNS
from aspp_seg.errors import ConfigError
from experiments import plans, stats, tables
from experiments.study import load_study

REPO = Path(__file__).resolve().parents[2]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _split(iou, miou, columns=COLUMNS):
    return {"columns": list(columns), "iou": np.asarray(iou), "miou": miou}


def _run(config, val, train, *, seed=None, steps=100, wall=90.0, state="finished"):
    return {
        "config": config,
        "group": config,
        "seed": seed,
        "state": state,
        "reason": None,
        "steps": steps,
        "wall_s": wall,
        "per_image": None,
        "val": val,
        "train": train,
    }


def test_tables_put_each_run_beside_the_study():
    iou = np.full(19, np.nan)
    iou[0], iou[10] = 0.9, 0.5  # road, sky
    results = {"dl2": _run("dl2", _split(iou, 0.7), _split(iou, 0.8)),
               "mine": _run("mine", _split(iou, 0.7), _split(iou, 0.8))}  # fmt: skip
    study = load_study()
    t1 = tables.table1(results, study).splitlines()
    assert _cells(t1[2])[:3] == ["DL-2", "this run (dl2)", "90.00"]
    assert _cells(t1[3])[2] == "96.99" and _cells(t1[4])[2] == "-6.99"
    assert _cells(t1[4])[-1] == f"{70 - 67.29:+.2f}"
    assert _cells(t1[5])[:3] == ["mine", "this run (mine)", "90.00"]  # not in the study
    assert _cells(t1[6])[:3] == ["", "study", "-"]
    t2 = tables.table2(results, study).splitlines()
    assert _cells(t2[2]) == ["DL-2 (dl2)", "100", "1.5 min", "80.00", "70.97", "+9.03",
                             "70.00", "67.29", "+2.71"]  # fmt: skip
    assert _cells(t2[3])[4:6] == ["-", "-"]
    assert tables.caveat("/data/cityscapes", "full") == ""
    assert "mean nothing" in tables.caveat("demo", "full")


def test_other_data_sets_get_seed_means_and_the_comparison_to_the_reference():
    """CamVid: its 11 classes as columns, no study rows; DL-1 and DL-2 over three seeds,
    DL-4 once: mean ± sd rows, the difference to DL-1 with Welch's interval and a
    verdict; a failed run is a row with its reason."""
    from aspp_seg.data.datasets.camvid import CLASSES as CAMVID_CLASSES

    def run(config, seed, miou, first):
        iou = np.full(11, 0.5)
        iou[0] = first
        result = _run(
            config,
            _split(iou, miou, CAMVID_CLASSES),
            _split(iou, miou + 0.1, CAMVID_CLASSES),
            seed=seed,
            steps=225,
            wall=60.0,
        )
        return f"{config}_seed{seed}", result

    results = dict([run("dl1", 0, 0.40, 0.80), run("dl1", 1, 0.42, 0.86),
                    run("dl1", 2, 0.44, 0.92), run("dl2", 0, 0.50, 0.9),
                    run("dl2", 1, 0.54, 0.9), run("dl2", 2, 0.58, 0.9),
                    run("dl4", 0, 0.45, 0.9)])  # fmt: skip
    results["dl4_seed1"] = {
        **results["dl4_seed0"],
        "seed": 1,
        "state": "failed",
        "reason": "training dl4_seed1 failed (exit status 1): loss is NaN",
    }
    del results["dl4_seed1"]["val"], results["dl4_seed1"]["train"]
    study = load_study()
    t1 = tables.table1(results, study).splitlines()
    assert _cells(t1[0])[2:] == [*CAMVID_CLASSES, "mIoU"]
    rows = [_cells(line) for line in t1[2:]]
    assert [r[:2] for r in rows] == [  # a variant's mean, then each of its runs
        ["DL-1", "mean ± sd, 3 seeds"],
        *(["DL-1", f"dl1_seed{seed}"] for seed in range(3)),
        ["DL-2", "mean ± sd, 3 seeds"],
        *(["DL-2", f"dl2_seed{seed}"] for seed in range(3)),
        ["DL-4", "this run (dl4_seed0)"],
        ["DL-4", "dl4_seed1: failed: training dl4_seed1 failed (exit status 1): loss is NaN"],
    ]
    assert rows[0][2] == "86.00 ± 6.00" and rows[0][3] == "50.00 ± 0.00"
    assert rows[0][-1] == "42.00 ± 2.00" and rows[-1][2:] == ["-"] * 12
    assert [row[-1] for row in rows[1:4]] == ["40.00", "42.00", "44.00"]
    t2 = tables.table2(results, study).splitlines()
    assert _cells(t2[0]) == ["Method", "steps", "train time", "train mIoU", "val mIoU"]
    assert _cells(t2[7]) == ["DL-2 (dl2_seed2)", "225", "1.0 min", "68.00", "58.00"]
    assert _cells(t2[9])[:4] == ["DL-4 (dl4_seed1)", "-", "1.0 min", "failed: training "
                                 "dl4_seed1 failed (exit status 1): loss is NaN"]  # fmt: skip
    assert _cells(t2[10]) == ["DL-1 (mean ± sd, 3 seeds)", "225", "3.0 min in all",
                             "52.00 ± 2.00", "42.00 ± 2.00"]  # fmt: skip

    table = tables.comparison(results, study, "dl1").splitlines()
    welch = stats.welch_interval([0.40, 0.42, 0.44], [0.50, 0.54, 0.58])
    assert _cells(table[2]) == ["DL-1 (reference)", "3", "42.00 ± 2.00", "", "", "", ""]
    assert _cells(table[3]) == ["DL-2", "3", "54.00 ± 4.00", "+12.00",
                                f"[{100 * welch.low:+.2f}, {100 * welch.high:+.2f}]", "-",
                                "better"]  # fmt: skip
    # DL-4: one finished run, so no seed interval and no verdict
    assert _cells(table[4])[3:] == ["+3.00", "-", "-", "no verdict: one run, no seed interval"]
    assert "Welch's t" in table[-1] and "paired bootstrap" in table[-1]
    assert "Not the study's data set" in tables.caveat(None, "225", cityscapes=False)
    results["dl2_seed0"]["val"]["columns"] = list(COLUMNS)[:11]
    with pytest.raises(ConfigError, match="different classes"):
        tables.table1(results, study)


def test_run_specs_and_overlays(tmp_path):
    assert plans.parse_run("dl1@seed=1") == plans.RunSpec("dl1_seed1", "dl1", 1, None)
    assert plans.parse_run("segnet@steps=60@seed=2").steps == 60
    with pytest.raises(ConfigError, match="'lr=1' is not seed"):
        plans.parse_run("dl1@lr=1")
    overlay = REPO / "configs" / "overlay" / "study_camvid.yaml"
    dl1 = plans._net_parameters(plans.config_path("dl1"))
    assert plans.overlay_for(overlay, dl1, "dl1", tmp_path) == overlay  # all keys taken
    segnet = plans.overlay_for(
        overlay, plans._net_parameters(plans.config_path("segnet")), "segnet", tmp_path
    )
    kept = segnet.read_text()
    assert segnet.parent == tmp_path / "runs" / "segnet"
    assert "model.net.init_args.pretrained: false" in kept
    assert "backbone" not in kept and ".aspp." not in kept and "output_stride" not in kept
    assert "CamVidDataModule" in kept


def test_study_numbers_are_the_published_ones():
    study = load_study()
    assert set(study) == {"dl1", "dl2", "dl3", "dl4", "dl1_150ep", "segnet"}
    assert study["dl1_150ep"].method == "DL-1*" and study["dl1_150ep"].miou == 72.53
    assert study["segnet"].iou[0] == 94.99 and study["segnet"].train_miou is None
    # the published mIoU is the mean of the published per-class IoUs (to rounding),
    # except DL-1's: 65.43 printed, 65.34 the mean; kept as printed
    for name, row in study.items():
        tolerance = 0.1 if name == "dl1" else 0.015
        assert np.mean(row.iou) == pytest.approx(row.miou, abs=tolerance), name


def test_unknown_config_and_budget_are_named():
    with pytest.raises(ConfigError, match=r"dl9.*known configs:.*dl1"):
        plans.config_path("dl9")
    with pytest.raises(ConfigError, match="--budget 'huge'"):
        plans.budget_overrides("huge", set())
    tiny = plans.budget_overrides("tiny", {"backbone", "channels"})
    assert "--model.net.init_args.backbone" in tiny
    assert "--model.net.init_args.pretrained" not in tiny
    assert plans.budget_overrides("100", set())[:2] == ["--trainer.max_steps", "100"]


def test_test_split_switch_evaluates_the_train_split(tiny_cityscapes):
    """``--data.init_args.test_split train``: Table 2's train mIoU, without augmentation."""
    from aspp_seg.data import DemoDataModule

    data = DemoDataModule(str(tiny_cityscapes), test_split="train", num_workers=0,
                          augment="none", crop_size=(32, 32))  # fmt: skip
    data.setup("test")
    dataset = data.test_dataloader().dataset
    assert len(dataset) == 16  # the tiny tree's train frames, not its 8 val frames
    assert dataset[0]["image"].shape[-2:] == (64, 128)  # whole frames: no training crop
