"""Images that do not decode completely, outputs that never overwrite inputs, and one line
for the output mistakes of evaluate, export and predict: a row each.

- a JPEG cut to half its bytes (libjpeg fills the rest with grey) is named in one line
  wherever images are read: fit, predict, check-data, and evaluate's label reader;
- ``evaluate --json/--out``, ``export --output`` and ``predict --predict_dir`` never write
  over a file the command reads, and say so before anything is written;
- ``evaluate --out`` naming a file, ``export --output`` with another extension than the
  format's: one line;
- ``frame.png`` and ``frame.jpg`` in one predict source get outputs of their own;
- an image too large for whole-image inference is refused before the net runs, naming
  the sliding window, which runs it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from harness import Case, check

from aspp_seg.training.callbacks.prediction_writer import OUTPUTS

BAD = "aachen_000000_000019"
"""The train frame the data cases spoil (the first one, read by the tiny fit)."""
FRAME = "frankfurt_000000_000019"
GT = f"{FRAME}_gtFine_labelIds.png"
"""A ground-truth file of the tiny data's val split, read by the evaluate cases."""
GT_DIR = "{data}/gtFine/val"
ON_COPY = ("--data.init_args.root", "{work}/data")
FIT_LOG = ("runs/tiny/version_1", "runs/tiny/version_1/**")
"""A fit that stops at its data may have made its log folder."""
PREDICT = ("predict", "--config", "{config}", "--ckpt_path", "{ckpt}")
SOURCE = ("--data.init_args.predict_source", "{work}/photos")
OUT = ("--predict_dir", "{work}/out")
ERROR = "^aspp-seg: error: "


def _photo(height: int = 64, width: int = 128) -> np.ndarray:
    """An RGB frame with some structure (JPEG's entropy data then spans the file)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 3 % 256, cols * 2 % 256, (rows + cols) % 256], -1).astype(np.uint8)


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def _truncated_jpeg(image: np.ndarray | None = None) -> bytes:
    """A JPEG cut to half its bytes: OpenCV reads it as an image, grey where data is missing."""
    data = _jpeg(_photo() if image is None else image)
    return data[: len(data) // 2]


def _data_copy(ws) -> Path:
    copy = ws.work / "data"
    shutil.copytree(ws.data, copy)
    return copy


def _truncated_jpeg_in_data(ws) -> None:
    """The data copied, the first train frame's image replaced by a truncated JPEG (named
    as the layout wants: the decoder follows the bytes)."""
    image = _data_copy(ws) / "leftImg8bit" / "train" / "aachen" / f"{BAD}_leftImg8bit.png"
    image.write_bytes(_truncated_jpeg())


def _photos(files: dict[str, bytes]):
    """A setup: ``work/photos/<name>`` for each name and its bytes."""

    def setup(ws) -> None:
        for name, data in files.items():
            path = ws.work / "photos" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    return setup


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def _predictions(ws, *, truncate: str | None = None, suffix: str = "") -> None:
    """``work/pred/<frame><suffix>.png``: the val split's labelIds as predictions (a
    perfect score), the one of frame `truncate` a truncated JPEG."""
    pred = ws.work / "pred"
    pred.mkdir()
    for path in sorted((ws.data / "gtFine" / "val").rglob("*_gtFine_labelIds.png")):
        frame = path.name.removesuffix("_gtFine_labelIds.png")
        target = pred / f"{frame}{suffix}.png"
        if frame == truncate:
            grey = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            data = cv2.imencode(".jpg", grey)[1]
            target.write_bytes(data.tobytes()[: len(data) // 2])
        else:
            shutil.copy(path, target)


def _evaluate_setup(**kwargs):
    return lambda ws: _predictions(ws, **kwargs)


def _huge(ws) -> None:
    """A 6000 x 8000 photo (the issue's): one colour, a JPEG (written and read in well
    under a second, where a PNG takes seconds)."""
    (ws.work / "photos").mkdir()
    cv2.imwrite(str(ws.work / "photos" / "huge.jpg"), np.full((6000, 8000, 3), 90, np.uint8))


def _ckpt_as(name: str):
    def setup(ws) -> None:
        shutil.copy(ws.ckpt, ws.work / name)

    return setup


EVALUATE = ("evaluate", "--gt", GT_DIR, "--pred", "{work}/pred")
RECORD = "runs/tiny/version_0/predict/**"
"""A predict run's record of its settings (config.yaml, hparams.yaml) beside the checkpoint."""
PREDICT_WRITES = ("out/**", RECORD)

CASES = [
    # --- images that do not decode completely
    Case(
        "truncated JPEG (train), in fit",
        ("fit", "--config", "{config}", *ON_COPY),
        2,
        ERROR + r"image \S+/data/leftImg8bit/train/aachen/" + BAD + r"_leftImg8bit\.png is "
        r"truncated: ",
        setup=_truncated_jpeg_in_data,
        writes=FIT_LOG,
    ),
    Case(
        "truncated JPEG in the predict source",
        (*PREDICT, *SOURCE, *OUT),
        2,
        ERROR + r"image \S+/photos/b\.jpg is truncated: ",
        setup=_photos({"a.jpg": _jpeg(_photo()), "b.jpg": _truncated_jpeg()}),
        writes=PREDICT_WRITES,
    ),
    Case(
        "truncated JPEG as a prediction, in evaluate",
        (*EVALUATE,),
        2,
        ERROR + rf"cannot read label map \S+/pred/{FRAME}\.png: image file is truncated",
        setup=_evaluate_setup(truncate=FRAME),
    ),
    # --- evaluate: no output over an input, --out a folder, --json a file
    Case(
        "evaluate --json onto a ground-truth file",
        (*EVALUATE, "--json", GT_DIR + "/frankfurt/" + GT),
        2,
        ERROR + r"--json would overwrite \S+/" + re.escape(GT) + r", one of this command's "
        r"own inputs; choose another path$",
        setup=_evaluate_setup(),
    ),
    Case(
        "evaluate --json onto a prediction, by a relative path",
        (*EVALUATE, "--json", f"pred/{FRAME}.png"),
        2,
        ERROR + rf"--json would overwrite \S+/pred/{FRAME}\.png, one of this command's own "
        rf"inputs \(the same file as pred/{FRAME}\.png\); choose another path$",
        setup=_evaluate_setup(),
    ),
    Case(
        "evaluate --out onto a ground-truth file",
        (*EVALUATE, "--out", GT_DIR + "/frankfurt/" + GT),
        2,
        ERROR + r"--out \S+/" + re.escape(GT) + r" is a file; --out names a folder",
        setup=_evaluate_setup(),
    ),
    Case(
        "evaluate --out naming an existing file",
        (*EVALUATE, "--out", "{work}/notes.txt"),
        2,
        ERROR + r"--out \S+/notes\.txt is a file; --out names a folder for the result files",
        setup=lambda ws: (_predictions(ws), (ws.work / "notes.txt").write_text("mine\n")),
    ),
    Case(
        "evaluate --out whose result file would be a prediction",
        (*EVALUATE, "--out", "{work}/pred", "--stem", FRAME),
        2,
        ERROR + rf"--out \S+/pred would overwrite \S+/pred/{FRAME}_confusion\.png, one of this "
        r"command's own inputs",
        setup=_evaluate_setup(suffix="_confusion"),  # predictions <frame>_confusion.png
    ),
    Case(
        "evaluate --json naming a folder",
        (*EVALUATE, "--json", "{work}/pred"),
        2,
        ERROR + r"--json \S+/pred is a folder; name the JSON file to write$",
        setup=_evaluate_setup(),
    ),
    Case(
        "evaluate writes --json and --out beside its inputs",
        (*EVALUATE, "--json", "{work}/scores.json", "--out", "{work}/eval"),
        0,
        r"",
        setup=_evaluate_setup(),
        writes=("scores.json", "eval/*"),
    ),
    # --- export: the extension is the format's, the checkpoint is never the output
    Case(
        "export --output onto its checkpoint",
        ("export", "--ckpt_path", "{ckpt}", "--format", "torchscript", "--output", "{ckpt}"),
        2,
        ERROR + r"--output would overwrite \S+/last\.ckpt, one of this command's own inputs",
    ),
    Case(
        "export's default output is its checkpoint (model.pt, TorchScript)",
        (
            "export",
            "--ckpt_path",
            "{work}/model.pt",
            "--config",
            "{run}/config.yaml",
            "--format",
            "torchscript",
        ),
        2,
        ERROR + r"the default output \(give --output\) would overwrite \S+/model\.pt, one of",
        setup=_ckpt_as("model.pt"),
    ),
    Case(
        "export --output with the extension of another format",
        ("export", "--ckpt_path", "{ckpt}", "--format", "onnx", "--output", "{work}/model.pt"),
        2,
        ERROR + r"--output \S+/model\.pt does not end in \.onnx, the extension of --format "
        r"onnx: name it \S+/model\.onnx, or give --format torchscript$",
    ),
    Case(
        "export --output naming a folder",
        ("export", "--ckpt_path", "{ckpt}", "--format", "onnx", "--output", "{work}/x.onnx"),
        2,
        ERROR + r"--output \S+/x\.onnx is a folder; name the \.onnx file to write$",
        setup=lambda ws: (ws.work / "x.onnx").mkdir(),
    ),
    # --- predict: outputs of their own, never over an input
    Case(
        "predict --predict_dir onto its source folder: outputs beside the inputs",
        (*PREDICT, *SOURCE, "--predict_dir", "{work}/photos"),
        0,
        r"",
        setup=_photos({"a.png": _png(_photo())}),
        writes=(*(f"photos/{kind}/*" for kind in OUTPUTS), RECORD),  # photos/a.png: as was
    ),
    Case(
        "predict --predict_dir onto a source folder that holds an earlier run's outputs",
        (*PREDICT, *SOURCE, "--predict_dir", "{work}/photos"),
        2,
        ERROR + r"input \S+/photos/color/a\.png lies in \S+/photos/color, where predictions "
        r"are written \(predict_dir\)",
        setup=_photos({"a.png": _png(_photo()), "color/a.png": _png(_photo())}),
    ),
    # --- an image too large for one whole-image pass
    Case(
        "predict on a 6000 x 8000 photo: refused before the net runs",
        (*PREDICT, *SOURCE, *OUT),
        2,
        ERROR + r"an image of 6000 x 8000 px \(48\.0 MP\) is too large for whole-image "
        r"inference \(max_pixels: 8\.4 MP\); run it in sliding windows with "
        r"--model\.inference\.init_args\.mode slide ",
        setup=_huge,
        writes=PREDICT_WRITES,
    ),
    Case(
        "predict above max_pixels with the images resized for the net, as the refusal says",
        (
            *PREDICT,
            *SOURCE,
            *OUT,
            "--model.inference.init_args.max_pixels",
            "1000",
            "--data.init_args.image_size",
            "[16, 32]",
        ),
        0,
        r"",
        setup=_photos({"a.png": _png(_photo())}),
        writes=PREDICT_WRITES,
    ),
    Case(
        "predict above max_pixels in sliding windows, as the refusal says: runs",
        (
            *PREDICT,
            *SOURCE,
            *OUT,
            "--model.inference.init_args.max_pixels",
            "1000",
            "--model.inference.init_args.mode",
            "slide",
            "--model.inference.init_args.window",
            "[32, 64]",
        ),
        0,
        r"",
        setup=_photos({"a.png": _png(_photo())}),
        writes=PREDICT_WRITES,
    ),
]


TWO_STEMS = Case(
    "predict: frame.png and frame.jpg keep outputs of their own",
    (*PREDICT, *SOURCE, *OUT),
    0,
    r"",
    setup=_photos({"frame.png": _png(_photo()), "frame.jpg": _jpeg(_photo()[::-1])}),
    writes=PREDICT_WRITES,
)
"""A row whose outputs `test_two_stems_get_outputs_of_their_own` also reads."""


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case, ws, run_cli):
    check(case, ws, run_cli)
    if case.status != 0:  # nor an empty folder: a refused predict leaves no --predict_dir
        assert not (ws.work / "out").exists()


def test_check_data_names_a_truncated_jpeg(ws, run_cli):
    """``check-data`` lists its problems on stdout and exits 1 (its contract: a report,
    not an error); the truncated JPEG is named there, and nothing is written."""
    case = Case(
        "check-data",
        ("check-data", "--config", "{config}", *ON_COPY, "--workers", "0"),
        1,
        r"",
        setup=_truncated_jpeg_in_data,
    )
    result = check(case, ws, run_cli)
    assert re.search(rf"image \S+/{BAD}_leftImg8bit\.png is truncated", result.stdout)
    assert "Traceback" not in result.stderr


def test_two_stems_get_outputs_of_their_own(ws, run_cli):
    """frame.png keeps its output name; frame.jpg's keeps its extension before ``.png``,
    and the two differ (each is its own image's prediction)."""
    check(TWO_STEMS, ws, run_cli)
    outputs = sorted(p.name for p in (ws.work / "out" / "color").iterdir())
    assert outputs == ["frame.jpg.png", "frame.png"]
    overlays = [cv2.imread(str(ws.work / "out" / "overlay" / name)) for name in outputs]
    assert not np.array_equal(*overlays)


@pytest.mark.parametrize(
    ("settings", "size", "refused"),
    [
        ({"max_pixels": 100}, (10, 10), False),  # at the limit
        ({"max_pixels": 100}, (10, 11), True),
        ({"max_pixels": 100, "scales": (0.5, 2.0)}, (5, 6), True),  # 10 x 12 at scale 2
        ({"max_pixels": 100, "mode": "slide"}, (1000, 1000), False),  # windows bound memory
        ({"max_pixels": None}, (6000, 8000), False),
        ({}, (2048, 4096), False),  # the default: four Cityscapes frames
        ({}, (2048, 4097), True),
    ],
)
def test_whole_image_size_limit(settings, size, refused):
    from aspp_seg.errors import ConfigError
    from aspp_seg.evaluation.inference import Inference

    inference = Inference(**settings)
    if refused:
        with pytest.raises(ConfigError, match=r"--model\.inference\.init_args\.mode slide"):
            inference.check_size(*size)
    else:
        inference.check_size(*size)
