"""No silent wrong result, no lost file: a command overwrites or deletes only the files
named as its output, and a command that fails leaves the files it found as they were."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data.datasets.demo import generate_demo_cityscapes, generated_settings
from aspp_seg.errors import DataError

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative name -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _fails(argv: list[str], capsys) -> str:
    """Runs the CLI, expects exit status 2 and returns the one error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("aspp-seg: error: ")
    return last


@pytest.fixture
def tree(tiny_cityscapes, tmp_path):
    """A private copy of the tiny Cityscapes tree (tests here change files)."""
    root = tmp_path / "cs"
    shutil.copytree(tiny_cityscapes, root)
    return root


# ------------------------------------------------------------------------ export

EXPORT = ["export", "--config", DEMO, "--format", "torchscript", "--size", "64", "128"]


def test_export_refuses_a_file_at_the_default_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # without --ckpt_path the default is <config stem>.pt here
    mine = tmp_path / "demo.pt"
    mine.write_bytes(b"not written by export")
    last = _fails([*EXPORT, "--check", "false"], capsys)
    assert str(mine.name) in last and "--output" in last
    assert mine.read_bytes() == b"not written by export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.pt"]


def test_failed_export_check_keeps_the_output_and_leaves_no_partial(tmp_path, capsys):
    output = tmp_path / "model.pt"
    output.write_bytes(b"an earlier export")
    last = _fails([*EXPORT, "--output", str(output), "--tolerance", "-1"], capsys)
    assert "--tolerance" in last and "not written" in last
    assert output.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    # the named output is the user's to replace
    main([*EXPORT, "--output", str(output)])
    assert "wrote" in capsys.readouterr().out
    assert output.read_bytes() != b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_an_exporter_that_raises_leaves_the_file_as_it_was(tmp_path):
    from aspp_seg.evaluation.export import replacing

    path = tmp_path / "model.onnx"
    path.write_bytes(b"before")
    with pytest.raises(RuntimeError, match="exporter failed"), replacing(path) as staged:
        assert staged.suffix == ".onnx" and staged.parent == tmp_path
        staged.write_bytes(b"half")
        raise RuntimeError("exporter failed")
    assert path.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# --------------------------------------------------------------------- evaluate


def test_failed_evaluate_writes_nothing(tiny_cityscapes, tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    report = tmp_path / "scores.json"
    report.write_text("earlier scores\n")
    last = _fails(["evaluate", "--gt", str(tiny_cityscapes / "gtFine" / "val"),
                   "--pred", str(preds), "--out", str(tmp_path / "eval"),
                   "--json", str(report)], capsys)  # fmt: skip
    assert "have no prediction" in last
    assert report.read_text() == "earlier scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds", "scores.json"]


# ------------------------------------------------------------------------ cache


def test_cache_failing_halfway_keeps_the_existing_cache(tree, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["cache", "--config", DEMO, "--data.init_args.root", str(tree), "--out", str(out),
            "--progress", "false"]  # fmt: skip
    main(argv)
    capsys.readouterr()
    before = _snapshot(out)
    # a changed train image (staged first) and then a broken val label
    image = next((tree / "leftImg8bit" / "train").rglob("*.png"))
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(image)
    label = sorted((tree / "gtFine" / "val").rglob("*_labelIds.png"))[3]
    label.write_bytes(b"not a png")
    last = _fails(argv, capsys)
    assert label.name in last
    assert _snapshot(out) == before  # no .partial files either


# ------------------------------------------------------------------- check-data


def test_check_data_writes_nothing(tree, capsys):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tree.rglob("*") if p.is_file()}
    main(["check-data", "--config", DEMO, "--data.init_args.root", str(tree),
          "--workers", "1"])  # fmt: skip
    assert "no problems" in capsys.readouterr().out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tree.rglob("*") if p.is_file()}
    assert after == before


# ----------------------------------------------------------- prepare-cityscapes


def test_prepare_cityscapes_keeps_the_users_labeltrainids(tmp_path, capsys):
    root = generate_demo_cityscapes(tmp_path / "cs", num_train=2, num_val=1, height=32, width=64)
    main(["prepare-cityscapes", str(root), "--workers", "1"])
    written = sorted(root.rglob("*_labelTrainIds.png"))
    assert len(written) == 3
    edited, same = written[0], written[1]
    pixels = np.asarray(Image.open(edited)).copy()
    pixels[:4, :4] = 255  # the user's own edit
    Image.fromarray(pixels).save(edited)
    for path in written:  # older than the polygons: "to convert" again
        os.utime(path, ns=(1, 1))
    capsys.readouterr()
    kept = {p: p.read_bytes() for p in written}

    last = _fails(["prepare-cityscapes", str(root), "--workers", "1"], capsys)
    assert "1 existing labelTrainIds differ" in last and edited.name in last
    assert "--overwrite" in last
    assert {p: p.read_bytes() for p in written} == kept
    assert same.stat().st_mtime_ns == 1  # identical pixels: left untouched
    assert not list(root.rglob("*.part.png"))

    main(["prepare-cityscapes", str(root), "--workers", "1", "--overwrite"])
    assert edited.read_bytes() != kept[edited]
    assert same.read_bytes() == kept[same] and same.stat().st_mtime_ns == 1


def test_prepare_cityscapes_writes_no_wrong_result(tmp_path, capsys):
    root = generate_demo_cityscapes(tmp_path / "cs", num_train=2, num_val=1, height=32, width=64)
    labels = sorted(root.rglob("*_gtFine_labelIds.png"))
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(labels[0])  # disagrees with polygons
    last = _fails(["prepare-cityscapes", str(root), "--workers", "1"], capsys)
    assert "1 of 3 labelTrainIds are wrong" in last and "not written" in last
    stem = labels[0].name.removesuffix("_labelIds.png")
    assert not (labels[0].parent / f"{stem}_labelTrainIds.png").exists()  # a rerun redoes it
    assert not list(root.rglob("*.part.png"))


# ------------------------------------------------------------- demo generator

SMALL = {"num_val": 1, "height": 16, "width": 32, "seed": 0}


def test_demo_regeneration_replaces_only_its_own_files(tmp_path):
    root = generate_demo_cityscapes(tmp_path / "demo", num_train=4, **SMALL)
    city = root / "leftImg8bit" / "train" / "aachen"
    gt = root / "gtFine" / "train" / "aachen"
    mine = {
        city / "aachen_000050_000019_leftImg8bit.png": b"my own frame",
        gt / "aachen_000001_000019_gtFine_color.png": b"my colour rendering",
    }
    for path, data in mine.items():
        path.write_bytes(data)
    generate_demo_cityscapes(root, num_train=2, **SMALL)
    assert generated_settings(root)["num_train"] == 2
    assert {p: p.read_bytes() for p in mine} == mine
    assert not (city / "aachen_000001_000019_leftImg8bit.png").exists()  # generated: gone


def test_demo_regeneration_refuses_to_write_over_a_foreign_file(tmp_path):
    root = generate_demo_cityscapes(tmp_path / "demo", num_train=2, **SMALL)
    foreign = root / "leftImg8bit" / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    foreign.write_bytes(b"mine")  # where num_train=4 would write
    before = _snapshot(root)
    with pytest.raises(DataError, match="was not written by the demo generator"):
        generate_demo_cityscapes(root, num_train=4, **SMALL)
    assert _snapshot(root) == before


# --------------------------------------------------------------- experiments.table1


def test_table1_rerun_of_a_finished_run_keeps_its_log_and_wall_time(tmp_path, monkeypatch):
    from experiments import runner

    run = tmp_path / "runs" / "dl1" / "fit"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"finished")
    (run / "wall_s.txt").write_text("3600\n")
    (run / "fit.log").write_text("the training's output\n")

    def finished(command, stdout=None, stderr=None):  # fit --ckpt_path last: nothing to do
        stdout.write("nothing left to train\n")
        return 0  # its exit status

    monkeypatch.setattr("experiments.sweep.run_child", finished)
    runner.train("dl1", Path(DEMO), [], tmp_path, wandb_group=None, quiet=True)
    assert (run / "wall_s.txt").read_text() == "3600\n"
    assert (run / "fit.log").read_text() == "the training's output\nnothing left to train\n"
