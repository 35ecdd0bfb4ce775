"""`aspp-seg prepare-cityscapes` on the demo generator's files (its polygons and labels)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data import CityscapesDataModule
from aspp_seg.data.datasets.cityscapes import to_train_ids
from aspp_seg.data.datasets.demo import generate_demo_cityscapes


@pytest.fixture
def demo(tmp_path):
    return generate_demo_cityscapes(tmp_path / "cs", num_train=6, num_val=3, height=64, width=128)


def _label_files(root, suffix):
    return sorted(root.glob(f"gtFine/*/*/*{suffix}"))


def test_generator_polygons_read_by_cityscapesscripts_give_its_labels(demo):
    for polygons in _label_files(demo, "_gtFine_polygons.json"):
        annotation = Annotation()
        annotation.fromJsonFile(str(polygons))
        label_ids = np.asarray(Image.open(str(polygons).replace("_polygons.json", "_labelIds.png")))
        np.testing.assert_array_equal(np.asarray(createLabelImage(annotation, "ids")), label_ids)


def test_prepare_reproduces_the_generator_labels_and_is_idempotent(demo, capsys):
    main(["prepare-cityscapes", str(demo), "--workers", "2"])
    out = capsys.readouterr().out
    assert "9 to convert, 0 already done" in out and "verified 9" in out
    written = _label_files(demo, "_gtFine_labelTrainIds.png")
    assert len(written) == 9
    for path in written:
        label_ids = np.asarray(Image.open(str(path).replace("_labelTrainIds", "_labelIds")))
        np.testing.assert_array_equal(np.asarray(Image.open(path)), to_train_ids(label_ids))
    mtimes = [p.stat().st_mtime_ns for p in written]

    main(["prepare-cityscapes", str(demo), "--workers", "2"])
    assert "0 to convert, 9 already done" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in written] == mtimes
    assert not list(demo.rglob("*.part.png"))

    # The data module now reads the trainIds files.
    dm = CityscapesDataModule(str(demo), num_workers=0, crop_size=None)
    dm.setup("fit")
    assert {s.label.name.endswith("_labelTrainIds.png") for s in dm.datasets["train"].samples} == {
        True
    }
    assert dm.datasets["val"][0]["mask"].shape == (64, 128)


def test_verification_catches_a_wrong_result(demo, capsys):
    from aspp_seg.cli.commands.prepare_cityscapes import prepare

    polygons = _label_files(demo, "_gtFine_polygons.json")[0]
    spec = json.loads(polygons.read_text())
    spec["objects"].append({"label": "car", "polygon": [[0, 0], [20, 0], [20, 20], [0, 20]]})
    polygons.write_text(json.dumps(spec))  # now disagrees with the shipped labelIds
    with pytest.raises(Exception, match=r"1 of 9 labelTrainIds are wrong; first: .*differs"):
        prepare(demo, workers=1)


def test_no_polygons_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-cityscapes", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no *_gtFine_polygons.json under" in capsys.readouterr().err


def test_coarse_polygons_are_converted_too(demo):
    from aspp_seg.cli.commands.prepare_cityscapes import prepare

    fine = _label_files(demo, "_gtFine_polygons.json")[0]
    coarse_dir = demo / "gtCoarse" / "train_extra" / fine.parent.name
    coarse_dir.mkdir(parents=True)
    stem = fine.name.removesuffix("_gtFine_polygons.json")
    shutil.copy(fine, coarse_dir / f"{stem}_gtCoarse_polygons.json")
    counts = prepare(demo, workers=1)
    assert counts["converted"] == 10
    label_ids = np.asarray(Image.open(str(fine).replace("_polygons.json", "_labelIds.png")))
    coarse = np.asarray(Image.open(coarse_dir / f"{stem}_gtCoarse_labelTrainIds.png"))
    np.testing.assert_array_equal(coarse, to_train_ids(label_ids))
