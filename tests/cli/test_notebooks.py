"""The notebooks: stored without outputs, and executed headless on CPU against a demo
checkpoint made here."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import demo_args

from aspp_seg.cli.main import main

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ("qualitative.ipynb", "aspp_analysis.ipynb")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, name


@pytest.fixture(scope="module")
def demo_checkpoint(tiny_cityscapes, tmp_path_factory):
    """Two training steps of the demo config on the tiny data set (seconds on a CPU)."""
    folder = tmp_path_factory.mktemp("notebook_run")
    main(["fit", *demo_args(tiny_cityscapes, "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
          "--trainer.logger.init_args.save_dir", str(folder / "runs"))])  # fmt: skip
    return folder / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_headless(name, demo_checkpoint, monkeypatch):
    monkeypatch.setenv("ASPP_SEG_CKPT", str(demo_checkpoint))
    monkeypatch.setenv("ASPP_SEG_IMAGES", "0,3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no figure"
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        o.get("data", {}).get("text/markdown", "") for o in outputs
    )
    assert str(demo_checkpoint) in text
    if name == "aspp_analysis.ipynb":
        # 33x33 map, 3x3 kernel, rate 18 (DL-1): taps on features, checked by hand:
        # per axis 3 of 33 outputs keep 1 tap and 30 keep 2 -> (63 / 99)^2 = 40.5%
        assert "| DL-1 | 3 | 18 | 40.5% |" in text
