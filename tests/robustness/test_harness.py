"""The harness itself catches what it promises to catch (a check that cannot fail is none)."""

from __future__ import annotations

import pytest
from harness import Case, check


def _scribble(ws) -> None:
    (ws.work / "tiny.yaml").write_text("# changed\n")


CASES = [
    Case(
        "a finished run validates",
        ("validate", "--config", "{config}", "--ckpt_path", "{ckpt}"),
        0,
        r"",
        writes=("runs/tiny/version_0/validate/**",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case, ws, run_cli):
    check(case, ws, run_cli)


def test_a_file_written_where_not_asked_fails_the_case(ws, run_cli):
    case = Case(
        "validate, its outputs not allowed",
        ("validate", "--config", "{config}", "--ckpt_path", "{ckpt}"),
        0,
        r"",
    )
    with pytest.raises(AssertionError, match="files written where not asked"):
        check(case, ws, run_cli)


def test_a_wrong_status_or_line_fails_the_case(ws, run_cli):
    bad = ("fit", "--config", "{config}", "--trainer.nosuch", "1")
    with pytest.raises(AssertionError, match="exit 2, wanted 0"):
        check(Case("status", bad, 0, r""), ws, run_cli)
    with pytest.raises(AssertionError, match="last line"):
        check(Case("line", bad, 2, r"^no such line$"), ws, run_cli)
