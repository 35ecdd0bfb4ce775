"""Mistakes that are already one line and leave every file as it was; kept so by a row
each: config mistakes (an unknown key, a wrong type, broken YAML, a YAML tag that would
run code), bad data (a label value outside the class table, a truncated PNG, a data root
that does not exist) and a mistyped subcommand."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import REPO, Case, check
from PIL import Image

DL1 = str(REPO / "configs" / "dl1.yaml")
HELP = r" \(aspp-seg \w+ --help lists the settings\)$"
BAD = "aachen_000000_000019"  # the train frame that the data cases spoil
VAL_BAD = "frankfurt_000000_000019"  # the val frame


def _write(name: str, text: str):
    """A setup that writes ``work/<name>`` (``{work}`` and ``{config}`` filled in)."""

    def setup(ws) -> None:
        (ws.work / name).write_text(ws.fill(text))

    return setup


HOSTILE = "touch {work}/marker"
"""What the hostile YAML tags would run: a new file that the harness would find."""


def _data_copy(ws) -> Path:
    copy = ws.work / "data"
    shutil.copytree(ws.data, copy)
    return copy


def _label_value(split: str, stem: str, value: int):
    """A setup: a copy of the data whose label of frame `stem` holds `value` in a patch."""

    def setup(ws) -> None:
        city = stem.split("_")[0]
        label = _data_copy(ws) / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        array = np.array(Image.open(label))
        array[10:20, 10:20] = value
        Image.fromarray(array).save(label)

    return setup


def _truncated(split: str, stem: str):
    """A setup: a copy of the data whose image of frame `stem` is cut to half its bytes."""

    def setup(ws) -> None:
        city = stem.split("_")[0]
        image = _data_copy(ws) / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])

    return setup


def _file(split: str, stem: str, kind: str) -> str:
    city = stem.split("_")[0]
    top = "leftImg8bit" if kind == "leftImg8bit" else "gtFine"
    return re.escape(f"/data/{top}/{split}/{city}/{stem}_{kind}.png")


ON_COPY = ("--data.init_args.root", "{work}/data")

CASES = [
    # --- config mistakes
    Case(
        "unknown key on the command line",
        ("fit", "--config", "{config}", "--trainer.nosuch", "1"),
        2,
        r"^aspp-seg: error: unrecognized arguments: --trainer\.nosuch 1" + HELP,
    ),
    Case(
        "unknown key in a config file",
        ("fit", "--config", "{config}", "--config", "{work}/extra.yaml"),
        2,
        r"^aspp-seg: error: .*'trainer\.nosuch'" + HELP,
        setup=_write("extra.yaml", "trainer:\n  nosuch: 1\n"),
    ),
    Case(
        "unknown key of a net builder",
        ("validate", "--config", "{config}", "--model.net.init_args.nosuch=1"),
        2,
        r"^aspp-seg: error: .*\bmodel\.net\b.*Option 'nosuch' is not accepted" + HELP,
    ),
    Case(
        "wrong type on the command line",
        ("fit", "--config", "{config}", "--trainer.max_epochs", "many"),
        2,
        r'^aspp-seg: error: Parser key "trainer\.max_epochs": .*Given value: many' + HELP,
    ),
    Case(
        "wrong type in a config file",
        ("fit", "--config", "{config}", "--config", "{work}/extra.yaml"),
        2,
        r'^aspp-seg: error: .*"trainer\.max_epochs".*many' + HELP,
        setup=_write("extra.yaml", "trainer:\n  max_epochs: many\n"),
    ),
    Case(
        "broken YAML file, named",
        ("fit", "--config", "{work}/broken.yaml"),
        2,
        r"^aspp-seg: error: config \S+/broken\.yaml: Problems parsing config: " + ".*" + HELP,
        setup=_write("broken.yaml", "trainer: [1, 2\n"),
    ),
    Case(
        "missing config file",
        ("fit", "--config", "{work}/nosuch.yaml"),
        2,
        r"^aspp-seg: error: .*nosuch\.yaml",
    ),
    Case(
        "YAML tag that would run code, in a config file: refused, not run",
        ("fit", "--config", "{work}/hostile.yaml"),
        2,
        r"^aspp-seg: error: config \S+/hostile\.yaml: .*could not determine a constructor for "
        r"the tag 'tag:yaml\.org,2002:python/object/apply:os\.system'",
        setup=_write("hostile.yaml", f'trainer: !!python/object/apply:os.system ["{HOSTILE}"]\n'),
    ),
    Case(
        "YAML tag that would run code, deep in a config that includes another",
        ("validate", "--config", "{work}/hostile.yaml", "--ckpt_path", "{ckpt}"),
        2,
        r"^aspp-seg: error: config \S+/hostile\.yaml: .*python/object/apply:os\.system",
        setup=_write(
            "hostile.yaml",
            "config: {config}\ntrainer:\n  max_epochs: "
            f'!!python/object/apply:os.system ["{HOSTILE}"]\n',
        ),
    ),
    Case(
        "YAML tag that would run code, as a command-line value",
        (
            "fit",
            "--config",
            "{config}",
            "--trainer.max_epochs",
            f'!!python/object/apply:os.system ["{HOSTILE}"]',
        ),
        2,
        r'^aspp-seg: error: Parser key "trainer\.max_epochs"',
    ),
    Case(
        "mistyped subcommand",
        ("fitt", "--config", "{config}"),
        2,
        r"^aspp-seg: error: no subcommand 'fitt'; aspp-seg has fit, validate, test, predict, ",
    ),
    # --- bad data, named in one line
    Case(
        "label value outside the class table (train), in fit",
        ("fit", "--config", "{config}", *ON_COPY),
        2,
        rf"^aspp-seg: error: label \S+{_file('train', BAD, 'gtFine_labelIds')} holds values "
        r"77 outside the class table of labelIds \(allowed: 0-33\)$",
        setup=_label_value("train", BAD, 77),
    ),
    Case(
        "label value outside the class table (val), in validate",
        ("validate", "--config", "{config}", "--ckpt_path", "{ckpt}", *ON_COPY),
        2,
        rf"^aspp-seg: error: label \S+{_file('val', VAL_BAD, 'gtFine_labelIds')} holds "
        r"values 77 outside",
        setup=_label_value("val", VAL_BAD, 77),
    ),
    Case(
        "truncated PNG (train), in fit",
        ("fit", "--config", "{config}", *ON_COPY),
        2,
        rf"^aspp-seg: error: cannot read image \S+{_file('train', BAD, 'leftImg8bit')}",
        setup=_truncated("train", BAD),
    ),
    Case(
        "truncated PNG (val), in validate",
        ("validate", "--config", "{config}", "--ckpt_path", "{ckpt}", *ON_COPY),
        2,
        rf"^aspp-seg: error: cannot read image \S+{_file('val', VAL_BAD, 'leftImg8bit')}",
        setup=_truncated("val", VAL_BAD),
    ),
    Case(
        "data root that does not exist",
        ("fit", "--config", DL1, "--data.init_args.root", "/nonexistent/cityscapes"),
        2,
        r"^aspp-seg: error: Cityscapes folder /nonexistent/cityscapes not found; expected "
        r"leftImg8bit/train/.* under data\.root=/nonexistent/cityscapes$",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case, ws, run_cli):
    check(case, ws, run_cli)
    assert not (ws.work / "marker").exists()


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        (_label_value("train", BAD, 77), _file("train", BAD, "gtFine_labelIds")),
        (_truncated("train", BAD), _file("train", BAD, "leftImg8bit")),
    ],
    ids=["label value 77", "truncated PNG"],
)
def test_check_data_names_the_bad_file(setup, named, ws, run_cli):
    """``check-data`` lists its problems on stdout (stderr ends with its progress bar) and
    exits 1: the file is named there, and nothing is written."""
    case = Case("check-data", ("check-data", "--config", "{config}", *ON_COPY, "--workers",
                               "0"), 1, r"", setup=setup)  # fmt: skip
    result = check(case, ws, run_cli)
    assert re.search(rf"\S+{named}( |$)", result.stdout, re.MULTILINE), result.stdout
    assert "Traceback" not in result.stderr


def test_the_hostile_tag_runs_its_command_where_yaml_is_loaded_unsafely(tmp_path):
    """The rows' refusals mean something: the same text, loaded the unsafe way, runs."""
    hostile = f'trainer: !!python/object/apply:os.system ["{HOSTILE}"]'
    yaml.unsafe_load(hostile.format(work=tmp_path))
    assert (tmp_path / "marker").is_file()
