"""Parameter groups from YAML: the optimizer's groups are what the config says."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from aspp_seg.cli.main import main
from aspp_seg.errors import ConfigError
from aspp_seg.models import ASPP, deeplabv3
from aspp_seg.training.param_groups import apply_lr_mults, build_param_groups

REPO = Path(__file__).resolve().parents[2]


def _net():
    return deeplabv3(
        num_classes=5, backbone="resnet10t", pretrained=False, aux_head=True,
        aspp=partial(ASPP, channels=8),
    )  # fmt: skip


def test_groups_per_part_and_no_decay_on_norms_and_biases():
    net = _net()
    groups = build_param_groups(
        net, net, {"aux_head": {"lr_mult": 10}, "backbone": {"lr_mult": 0.1}},
        norm_bias_weight_decay=False,
    )  # fmt: skip
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {
        "backbone", "backbone_no_decay", "default", "default_no_decay",
        "aux_head", "aux_head_no_decay",
    }  # fmt: skip
    # every trainable parameter in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters()) and len(set(ids)) == len(ids)
    head = {id(p) for p in net.head.parameters()}
    assert {id(p) for p in by_name["default"]["params"]} <= head
    for name, group in by_name.items():
        if name.endswith("_no_decay"):
            assert group["weight_decay"] == 0.0
            assert all(p.ndim <= 1 for p in group["params"])  # norms and biases only
        else:
            assert "weight_decay" not in group and all(p.ndim > 1 for p in group["params"])
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-4)
    apply_lr_mults(optimizer)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["aux_head"] == pytest.approx(0.1) and lrs["backbone"] == pytest.approx(0.001)
    assert lrs["default"] == pytest.approx(0.01)
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay["backbone"] == 1e-4 and decay["backbone_no_decay"] == 0.0


def test_nothing_set_is_one_group_of_every_parameter():
    net = _net()
    (group,) = build_param_groups(net, net)
    assert len(group["params"]) == len(list(net.parameters())) and "name" not in group


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"decoder": {"lr_mult": 2}}, r"model\.param_groups\.decoder: DeepLabV3 has no part"),
        ({"head": {"lr": 2}}, r"model\.param_groups\.head: unknown setting 'lr'"),
    ],
)
def test_a_wrong_part_or_setting_is_a_config_error(parts, message):
    net = _net()
    with pytest.raises(ConfigError, match=message):
        build_param_groups(net, net, parts)


def test_fit_builds_the_groups_the_yaml_says(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "groups.yaml"
    config.write_text(
        "model:\n"
        "  param_groups:\n"
        "    aux_head: {lr_mult: 10}\n"
        "    backbone: {lr_mult: 0.1, weight_decay: 0.0}\n"
        "  norm_bias_weight_decay: false\n"
    )
    main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--config", str(config),
          "--data.init_args.root", str(tiny_cityscapes), "--data.init_args.batch_size", "4",
          "--data.init_args.num_workers", "0",
          "--model.net.init_args.aspp.init_args.channels", "8",
          "--model.net.init_args.aux_head", "true", "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
          "--trainer.logger", "false", "--trainer.callbacks", "[]",
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    state = torch.load(next(tmp_path.rglob("*.ckpt")), map_location="cpu", weights_only=True)
    groups = {g["name"]: g for g in state["optimizer_states"][0]["param_groups"]}
    base = 0.05  # demo.yaml's SGD, weight decay 1e-4
    assert groups["aux_head"]["initial_lr"] == pytest.approx(10 * base)
    assert groups["backbone"]["initial_lr"] == pytest.approx(0.1 * base)
    assert groups["backbone"]["weight_decay"] == 0.0
    assert groups["default"]["weight_decay"] == 1e-4
    assert groups["default_no_decay"]["weight_decay"] == 0.0
