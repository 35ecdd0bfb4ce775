"""``aspp-seg predict`` stops with one line ``aspp-seg: error: ...`` (exit status 2, no
traceback) naming the file or setting at fault: a file in the source that is not an
image, and an output folder that cannot be written or would overwrite inputs (checked
before any inference runs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from aspp_seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _predict(checkpoint: Path, source: Path, out: Path, *, workers: int = 0) -> list[str]:
    return [
        "predict", "--config", str(REPO / "configs" / "demo.yaml"),
        "--data.init_args.root", str(source.parent / "unused"),
        "--data.init_args.num_workers", str(workers),
        "--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.enable_progress_bar", "false", "--trainer.callbacks", "[]",
        "--trainer.logger", "false",
        "--ckpt_path", str(checkpoint),
        "--data.init_args.predict_source", str(source), "--predict_dir", str(out),
    ]  # fmt: skip


def _fails(capfd, argv: list[str]) -> tuple[str, str]:
    """Runs the CLI in this process; returns (its stderr, last stderr line) after exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capfd.readouterr()
    assert "wrote predictions" not in captured.out
    return captured.err, captured.err.strip().splitlines()[-1]


@pytest.fixture
def source(tiny_cityscapes, tmp_path) -> Path:
    """Two frames of the tiny data set in a folder of their own."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted((tiny_cityscapes / "leftImg8bit" / "val").rglob("*.png"))[:2]:
        shutil.copy(image, folder / image.name)
    return folder


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_that_is_not_an_image_is_named(
    source, tiny_checkpoint, tmp_path, monkeypatch, capfd, workers
):
    monkeypatch.chdir(tmp_path)
    culprit = source / "notes.png"
    culprit.write_text("not an image")
    err, line = _fails(capfd, _predict(tiny_checkpoint, source, tmp_path / "out", workers=workers))
    assert "Traceback" not in err
    assert (
        line == f"aspp-seg: error: cannot read image {culprit} in the predict source: not an image"
    )
    assert not list((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_image_is_named_also_from_a_loader_worker(
    source, tiny_checkpoint, tmp_path, monkeypatch, capfd, workers
):
    # the header is whole, so the file is listed and sized; decoding fails in the reader
    # (in a DataLoader worker process with workers > 0)
    monkeypatch.chdir(tmp_path)
    culprit = sorted(source.iterdir())[1]
    data = culprit.read_bytes()
    culprit.write_bytes(data[: len(data) // 2])
    err, line = _fails(capfd, _predict(tiny_checkpoint, source, tmp_path / "out", workers=workers))
    # with workers > 0 this depends on aspp_seg/cli/main.py reducing a DataError re-raised
    # from a DataLoader worker (with its "Original Traceback") to its own message
    assert "Traceback" not in err
    assert line == f"aspp-seg: error: cannot read image {culprit}"


def test_an_output_folder_under_a_file_is_named_before_predicting(
    source, tiny_checkpoint, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" / "predictions"
    err, line = _fails(capfd, _predict(tiny_checkpoint, source, out))
    assert "Traceback" not in err
    assert line == (
        f"aspp-seg: error: cannot write predictions to {out} (predict_dir): "
        f"{tmp_path / 'taken'} is a file, not a folder"
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "trainIds").write_text("a file where a subfolder goes")
    err, line = _fails(capfd, _predict(tiny_checkpoint, source, tmp_path / "out"))
    assert "Traceback" not in err
    assert line.startswith(f"aspp-seg: error: cannot write predictions to {tmp_path / 'out'} ")
    assert line.endswith(f"{tmp_path / 'out' / 'trainIds'} is a file, not a folder")
    # a writer listed in the config names its own setting
    writer = ["--trainer.callbacks+=aspp_seg.training.callbacks.prediction_writer.PredictionWriter",
              f"--trainer.callbacks.output_dir={out}"]  # fmt: skip
    err, line = _fails(capfd, [*_predict(tiny_checkpoint, source, tmp_path / "unused"), *writer])
    assert "Traceback" not in err
    assert line.startswith(
        f"aspp-seg: error: cannot write predictions to {out} "
        "(output_dir of the PredictionWriter in trainer.callbacks): "
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_named_before_predicting(
    source, tiny_checkpoint, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "read_only"
    out.mkdir(mode=0o555)
    try:
        err, line = _fails(capfd, _predict(tiny_checkpoint, source, out))
    finally:
        out.chmod(0o755)
    assert "Traceback" not in err
    assert line.startswith(f"aspp-seg: error: cannot write predictions to {out} (predict_dir)")
    assert not any(out.iterdir())


def test_outputs_inside_the_source_are_not_read_back_nor_overwritten(
    source, tiny_checkpoint, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    out = source / "predictions"  # inside the source folder: fine the first time
    main(_predict(tiny_checkpoint, source, out))
    assert "wrote predictions of 2 images" in capfd.readouterr().out
    before = {p: p.read_bytes() for p in out.rglob("*.png")}
    assert len(before) == 8
    # a second run would read the first one's outputs as images (and overwrite them)
    err, line = _fails(capfd, _predict(tiny_checkpoint, source, out))
    assert "Traceback" not in err
    assert line.startswith("aspp-seg: error: input ")
    assert f"lies in {out}/" in line and "(predict_dir)" in line
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == before


def test_a_second_run_into_the_same_folder_overwrites_by_name_and_says_so(
    source, tiny_checkpoint, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    stale = out / "trainIds" / "earlier.png"
    stale.parent.mkdir(parents=True)
    cv2.imwrite(str(stale), np.zeros((4, 4), np.uint8))
    first = sorted(source.iterdir())[0]
    cv2.imwrite(str(out / "trainIds" / first.name), np.full((4, 4), 7, np.uint8))
    main(_predict(tiny_checkpoint, source, out))
    captured = capfd.readouterr()
    assert f"note: {out} holds earlier predictions" in captured.err
    assert "wrote predictions of 2 images" in captured.out
    assert cv2.imread(str(out / "trainIds" / first.name), cv2.IMREAD_UNCHANGED).shape == (64, 128)
    assert stale.is_file()  # not the writer's to delete
