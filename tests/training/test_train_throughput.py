"""`benchmarks/train_throughput.py` on a tiny crop: it runs, the ratios follow from the
step times, and each variant gives each net the fast paths it names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_give_each_net_its_fast_paths(bench):
    assert bench.variant_paths("base", "cpu") == {"ours": set(), "torchvision": set()}
    both = {"channels_last", "fused"}
    assert bench.variant_paths("channels_last+fused", "cpu") == {"ours": both, "torchvision": both}
    # auto: aspp-seg's automatic paths for ours only; torchvision as its reference runs
    assert bench.variant_paths("auto", "cpu") == {"ours": {"channels_last"}, "torchvision": set()}
    auto_bf16 = bench.variant_paths("auto+bf16", "cpu")
    assert auto_bf16 == {"ours": {"channels_last", "bf16"}, "torchvision": {"bf16"}}
    with pytest.raises(ValueError, match="unknown fast path"):
        bench.variant_paths("channels_first", "cpu")


@pytest.mark.slow  # times every variant of the step: 40 s idle, 120 s beside a training
def test_tiny_run_reports_consistent_ratios(bench, tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = bench.main(
        height=64, width=96, output_strides=[16], variants=["base", "auto"], warmup=0,
        rounds=2, json_out=str(out),
    )  # fmt: skip
    assert json.loads(out.read_text()) == rows
    assert [row["variant"] for row in rows] == ["base", "auto"]
    for row in rows:
        ours, theirs = row["nets"]["ours"], row["nets"]["torchvision"]
        assert len(ours["step_s_all"]) == len(theirs["step_s_all"]) == 2
        assert row["ratio"] == pytest.approx(ours["step_s"] / theirs["step_s"])
        assert row["ratio_cpu"] == pytest.approx(ours["cpu_s"] / theirs["cpu_s"])
    assert rows[1]["paths"] == {"ours": ["channels_last"], "torchvision": ["none"]}
    assert "ours / torchvision step time" in capsys.readouterr().out
