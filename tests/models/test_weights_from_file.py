"""Weights from files on disk (issue 32): a timm backbone checkpoint under ``pretrained``,
a whole net under ``--model.init_weights`` (an aspp-seg checkpoint or a torchvision
DeepLabV3 state dict, the classifier fresh when the class count differs), and one-line
errors. Every file is written by the test: no network."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.checkpoints import read_checkpoint
from aspp_seg.models import ASPP, deeplabv3
from aspp_seg.training import module as module_file
from aspp_seg.training.module import SegmentationModule

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def demo_net(num_classes: int = 19, **settings) -> nn.Module:
    """The net of configs/demo.yaml with 16 ASPP channels, as `tiny_checkpoint` trains it."""
    demo = {
        "backbone": "resnet10t",
        "pretrained": False,
        "output_stride": 8,
        "aspp": partial(ASPP, rates=[6, 12, 18], channels=16),
    }
    return deeplabv3(num_classes=num_classes, **(demo | settings))


def checkpoint_net(path: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(path)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_from_a_timm_checkpoint(tmp_path, suffix):
    torch.manual_seed(0)
    source = timm.create_model("resnet10t").state_dict()  # with its ImageNet classifier
    path = tmp_path / f"resnet10t{suffix}"
    if suffix == ".pth":
        torch.save(source, path)
    else:
        save_file(source, path)
    net = demo_net(pretrained=str(path))
    loaded = net.backbone.body.state_dict()
    assert loaded.keys() <= source.keys()
    assert all(torch.equal(loaded[k], source[k]) for k in loaded)


def test_backbone_file_of_another_model_is_one_line(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(ConfigError) as error:
        demo_net(pretrained=str(path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"pretrained {path} does not fit backbone 'resnet10t': ")
    assert "missing from the file: " in message
    assert re_more(message)


def test_backbone_file_that_holds_code_is_refused(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"conv1.weight": torch.zeros(1), "run": partial(print, "hi")}, path)
    with pytest.raises(ConfigError, match=r"^pretrained .*code\.pth is refused: it asks to load"):
        demo_net(pretrained=str(path))


@pytest.mark.parametrize("num_classes", [19, 5])
def test_whole_net_from_an_aspp_seg_checkpoint(tiny_checkpoint, monkeypatch, num_classes):
    saved = checkpoint_net(tiny_checkpoint)
    logged: list[str] = []
    monkeypatch.setattr(module_file, "rank_zero_info", logged.append)
    torch.manual_seed(1)
    module = SegmentationModule(
        demo_net(), num_classes=num_classes, init_weights=str(tiny_checkpoint)
    )
    state = module.net.state_dict()
    assert state.keys() == saved.keys()
    fresh = {"head.classifier.weight", "head.classifier.bias"} if num_classes != 19 else set()
    for key, value in state.items():
        if key in fresh:
            assert value.shape[0] == num_classes != saved[key].shape[0]
        else:
            assert torch.equal(value, saved[key]), key
    if fresh:
        assert logged == [
            f"aspp-seg: --model.init_weights {tiny_checkpoint}: the classifier starts fresh "
            "for 5 classes (the file has 19); every other tensor is the file's"
        ]
    else:
        assert logged == []


def torchvision_resnet18_deeplabv3(num_classes: int) -> nn.Module:
    """torchvision's DeepLabV3 (its own classes: ResNet, DeepLabHead, FCNHead) on a
    ResNet-18 at output stride 32, the smallest network in torchvision's layout (its
    ResNet-18 cannot dilate): 16 M parameters instead of deeplabv3_resnet50's 42 M."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead

    body = IntermediateLayerGetter(resnet18(), return_layers={"layer4": "out", "layer3": "aux"})
    head = DeepLabHead(512, num_classes, atrous_rates=[12, 24, 36])
    return DeepLabV3(body, head, FCNHead(256, num_classes))


def test_whole_net_from_a_torchvision_state_dict(tmp_path, monkeypatch):
    from aspp_seg.models.port import torchvision_to_ours

    torch.manual_seed(0)
    theirs = torchvision_resnet18_deeplabv3(num_classes=21).state_dict()
    path = tmp_path / "deeplabv3_torchvision.pth"
    torch.save(theirs, path)
    logged: list[str] = []
    monkeypatch.setattr(module_file, "rank_zero_info", logged.append)
    net = deeplabv3(
        num_classes=7,
        backbone="resnet18",
        pretrained=False,
        output_stride=32,
        aspp=partial(ASPP, rates=[12, 24, 36], dropout=0.5),
        head_convs=1,
    )
    module = SegmentationModule(net, init_weights=str(path))
    expected = torchvision_to_ours(theirs)  # the file's aux head: left out (ours has none)
    state = module.net.state_dict()
    for key, value in state.items():
        if key.startswith("head.classifier."):
            assert value.shape[0] == 7 != expected[key].shape[0]
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, expected[key]), key
    assert "for 7 classes (the file has 21)" in logged[0]


def re_more(message: str) -> bool:
    import re

    return re.search(r" and \d+ more", message) is not None


def fit_args(tiny_cityscapes: Path, tmp_path: Path, *more: str) -> list[str]:
    return [
        "fit", "--config", str(DEMO), "--data.init_args.root", str(tiny_cityscapes),
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.max_steps", "1", "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.default_root_dir", str(tmp_path / "runs"), *more,
    ]  # fmt: skip


def one_error_line(result) -> str:
    """The error line of a run that failed with exit status 2, checked to be its only one."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize("setting", ["--model.init_weights", "--model.net.init_args.pretrained"])
def test_missing_file_is_one_line(run_cli, tiny_cityscapes, tmp_path, setting):
    result = run_cli(*fit_args(tiny_cityscapes, tmp_path, setting, "nowhere.pth"), cwd=tmp_path)
    name = "pretrained" if "pretrained" in setting else setting
    assert one_error_line(result) == f"aspp-seg: error: {name} nowhere.pth: no such file"
    assert not (tmp_path / "runs").exists()  # stopped before the run began


def test_mismatched_keys_are_one_line(run_cli, tiny_cityscapes, tmp_path):
    path = tmp_path / "other.pth"
    wider = demo_net(aspp=partial(ASPP, rates=[6, 12, 18], channels=32))  # the run's: 16
    torch.save(wider.state_dict(), path)
    result = run_cli(*fit_args(tiny_cityscapes, tmp_path, "--model.init_weights", str(path)),
                     cwd=tmp_path)  # fmt: skip
    line = one_error_line(result)
    assert line.startswith(
        f"aspp-seg: error: --model.init_weights {path} does not fit the net (state dict): "
        "other shape: head.aspp.branches.0.0.weight [32, 512, 1, 1] in the file, "
        "[16, 512, 1, 1] in the net, "
    )
    assert re_more(line)
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_replaces_init_weights(run_cli, tiny_cityscapes, tiny_checkpoint, tmp_path):
    """With --ckpt_path the checkpoint's weights replace the init file's, so a run's
    config that names an init file no longer there still validates (and resumes)."""
    checkpoint = tmp_path / "run.ckpt"  # a copy: the evaluation's files go beside it
    shutil.copy(tiny_checkpoint, checkpoint)
    result = run_cli(
        "validate", "--config", str(DEMO), "--data.init_args.root", str(tiny_cityscapes),
        "--data.init_args.num_workers", "0", "--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
        "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false",
        "--model.init_weights", "gone.pth", "--ckpt_path", str(checkpoint),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_a_resume_needs_no_init_file(run_cli, tiny_cityscapes, tmp_path):
    """A resume takes its weights from the checkpoint: the init file need not exist, and
    naming another one is no change of what is trained."""
    first = run_cli(*fit_args(tiny_cityscapes, tmp_path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (checkpoint,) = (tmp_path / "runs").rglob("*.ckpt")
    more = ("--model.init_weights", "gone.pth", "--ckpt_path", str(checkpoint))
    resumed = run_cli(*fit_args(tiny_cityscapes, tmp_path, *more, "--trainer.max_steps", "2"),
                      cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
