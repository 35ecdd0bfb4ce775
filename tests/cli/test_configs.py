"""Every study and recipe config: resolves from its delta YAML, builds the network it
claims, and trains one step on the demo data; the train-OS16 / evaluate-OS8 switch."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer

from aspp_seg.cli.config import build_net, read_config
from aspp_seg.cli.main import main
from aspp_seg.data import DemoDataModule
from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.inference import Inference
from aspp_seg.models import ASPP, DeepLabV3, SegNet, deeplabv3, segnet
from aspp_seg.models.heads import DeepLabV3PlusHead
from aspp_seg.training.module import SegmentationModule

REPO = Path(__file__).resolve().parents[2]
STUDY = ["dl1", "dl2", "dl3", "dl4", "dl1_150ep", "segnet", "deeplabv3_os8", "deeplabv3plus"]


def _plain(config) -> dict:
    return json.loads(json.dumps(config.as_dict(), default=str))


def resolved_config(path: str) -> dict:
    """A config as `aspp-seg fit` reads it, as plain JSON-like data."""
    return _plain(read_config(["--config", path]))


@pytest.fixture(scope="module")
def parsed() -> dict:
    return {
        name: read_config(["--config", str(REPO / "configs" / f"{name}.yaml")]) for name in STUDY
    }


@pytest.fixture(scope="module")
def configs(parsed) -> dict[str, dict]:
    return {
        name: json.loads(json.dumps(config.as_dict(), default=str))
        for name, config in parsed.items()
    }


def _atrous(net: DeepLabV3) -> list[torch.nn.Conv2d]:
    return [branch.spatial_conv for branch in net.head.aspp.atrous_branches]


def test_study_configs_share_the_protocol(configs):
    for name, config in configs.items():
        data = config["data"]["init_args"]
        assert config["data"]["class_path"] == "aspp_seg.data.CityscapesDataModule", name
        assert data["batch_size"] == 8, name
        assert config["trainer"]["logger"]["init_args"]["name"] == name
        if name not in ("segnet", "deeplabv3_os8"):
            assert config["model"]["optimizer"]["init_args"]["lr"] == 0.007, name
            assert data["crop_size"] == [513, 513] and data["augment"] == "none", name
            assert config["model"]["net"]["init_args"]["backbone"] == "resnet101", name
            assert config["model"]["net"]["init_args"]["output_stride"] == 16, name
    assert configs["dl1"]["trainer"]["max_epochs"] == 40
    assert configs["dl1_150ep"]["trainer"]["max_epochs"] == 150
    assert configs["segnet"]["trainer"]["max_steps"] == 7500
    assert configs["deeplabv3_os8"]["trainer"]["max_steps"] == 80000
    os8 = configs["deeplabv3_os8"]["data"]["init_args"]
    assert os8["crop_size"] == [512, 1024] and os8["augment"] == "deeplabv3"
    assert os8["scale_range"] == [0.5, 2.0]


@pytest.mark.parametrize(
    ("name", "kernel", "rates"),
    [
        ("dl1", 3, [6, 12, 18]),
        ("dl2", 3, [3, 6, 9]),
        ("dl3", 4, [8, 16, 24]),
        ("dl4", 3, [6, 12, 18, 24]),
        ("dl1_150ep", 3, [6, 12, 18]),
        ("deeplabv3_os8", 3, [12, 24, 36]),
        ("deeplabv3plus", 3, [6, 12, 18]),
    ],
)
def test_deeplab_configs_have_the_branches_they_claim(parsed, name, kernel, rates):
    net = build_net(parsed[name], device="meta")  # no memory, no weights
    convs = _atrous(net)
    assert [c.kernel_size for c in convs] == [(kernel, kernel)] * len(rates)
    assert [c.dilation[0] for c in convs] == rates
    assert [c.padding[0] for c in convs] == [(kernel - 1) * r // 2 for r in rates]
    assert len(net.head.aspp.branches) == len(rates) + 2  # + 1x1 + image pooling
    assert net.head.aspp.out_channels == 256
    assert net.backbone.name == "resnet101"
    assert net.backbone.feature_info[-1]["reduction"] == (8 if name == "deeplabv3_os8" else 16)
    assert (net.aux_head is not None) == (name == "deeplabv3_os8")
    assert isinstance(net.head, DeepLabV3PlusHead) == (name == "deeplabv3plus")


def test_torchvision_reference_config_is_torchvisions_recipe():
    """The recipe that tests/training/test_torchvision_step.py shows equal to torchvision's loop."""
    config = read_config(["--config", str(REPO / "configs" / "torchvision_reference.yaml")])
    model = _plain(config)["model"]
    assert model["aux_weight"] == 0.5
    assert model["param_groups"] == {"aux_head": {"lr_mult": 10.0}}
    sgd = model["optimizer"]["init_args"]
    assert (sgd["lr"], sgd["momentum"], sgd["weight_decay"]) == (0.01, 0.9, 1e-4)
    assert model["scheduler"]["class_path"] == "aspp_seg.training.schedules.WarmupPolyLR"
    assert model["scheduler"]["init_args"]["power"] == 0.9
    assert model["scheduler"]["init_args"]["warmup_steps"] == 0
    net = build_net(config, device="meta")
    assert [c.dilation[0] for c in _atrous(net)] == [12, 24, 36]
    assert net.backbone.feature_info[-1]["reduction"] == 8
    assert net.aux_head is not None and len(net.head.refine) == 1  # torchvision's head
    dropouts = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.5, 0.1]  # ASPP projection, FCN aux head


def test_segnet_config_builds_segnet(parsed):
    net = build_net(parsed["segnet"], device="meta")
    assert isinstance(net, SegNet)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.encoder) == 5


def test_delta_config_needs_no_other_file_and_cli_still_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # includes resolve next to the including file, not the cwd
    config = resolved_config(str(REPO / "configs" / "dl3.yaml"))
    assert config["model"]["net"]["init_args"]["aspp"]["init_args"]["kernel_size"] == 4
    assert config["trainer"]["max_epochs"] == 40  # from base/study.yaml
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs" / "dl3.yaml"),
              "--model.net.init_args.aspp.init_args.rates", "[2, 4]",
              "--print_config"])  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["init_args"]["aspp"]["init_args"]["rates"] == [2, 4]
    assert printed["model"]["net"]["init_args"]["aspp"]["init_args"]["kernel_size"] == 4


def _fit_args(name: str, root: Path) -> list[str]:
    """One fast_dev_run step (one training and one validation batch) on the demo data."""
    args = [
        "fit",
        "--config", str(REPO / "configs" / f"{name}.yaml"),
        "--data.init_args.root", str(root),
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.pretrained", "false",
        "--trainer.fast_dev_run", "true",
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    return args


# Default run: each config as it is (head, rates, kernel, aux, decoder, optimiser, data
# pipeline) with its width cut to fit the 2-core CPU budget: ResNet-18, 16 channels, 32x32
# crops. The slow variant runs the configs' own ResNet-101 / 256 channels / crop size.
_REDUCED = {"--data.init_args.crop_size": "[32, 32]"}
_REDUCED_DEEPLAB = {
    "--model.net.init_args.backbone": "resnet18",
    "--model.net.init_args.aspp.init_args.channels": "16",
}


@pytest.mark.parametrize("name", STUDY)
def test_every_config_trains_one_step_on_demo_data(name, tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reduced = _REDUCED if name == "segnet" else {**_REDUCED, **_REDUCED_DEEPLAB}
    main(_fit_args(name, tiny_cityscapes) + [x for kv in reduced.items() for x in kv])


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDY)
def test_every_config_trains_one_step_at_full_size(name, tiny_cityscapes, tmp_path, monkeypatch):
    """Each config's own network and crop size, batch 2, on the demo frames (padded)."""
    monkeypatch.chdir(tmp_path)
    main(_fit_args(name, tiny_cityscapes))


class _Strides(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(("train", pl_module.net.output_stride))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self.seen.append(("val", pl_module.net.output_stride))


def test_train_at_16_evaluate_at_8(tiny_cityscapes, tmp_path):
    net = deeplabv3(
        num_classes=19, backbone="resnet18", pretrained=False, aspp=partial(ASPP, channels=16)
    )
    module = SegmentationModule(net, inference=Inference(output_stride=8))
    data = DemoDataModule(str(tiny_cityscapes), batch_size=2, val_batch_size=1, num_workers=0)
    strides = _Strides()
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[strides],
    )
    trainer.fit(module, datamodule=data)
    assert ("train", 16) in strides.seen and ("val", 8) in strides.seen
    assert ("val", 16) not in strides.seen and ("train", 8) not in strides.seen
    assert net.output_stride == 16 and net.head.aspp.rates == (6, 12, 18)
    trainer.validate(module, datamodule=data, verbose=False)
    assert strides.seen[-1] == ("val", 8)


def test_eval_output_stride_errors_at_construction():
    with pytest.raises(ConfigError, match=r"init_args.output_stride\) needs a DeepLab network"):
        SegmentationModule(
            segnet(num_classes=19, pretrained=False), inference=Inference(output_stride=8)
        )
    with pytest.raises(ConfigError, match=r"output_stride=12 .*allowed"):
        Inference(output_stride=12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--model.net.init_args.aspp.init_args.kernel_size",
                "4",
                "--model.net.init_args.aspp.init_args.rates",
                "[8, 9]",
            ],
            "kernel_size=4 with rate 9 needs padding 27/2, which is not an integer; "
            "with an even kernel_size use even rates",
        ),
        (
            ["--model.net.init_args.output_stride", "12"],
            "output_stride=12 is not supported; allowed: (8, 16, 32)",
        ),
    ],
)
def test_invalid_head_settings_stop_with_one_line(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "configs" / "demo.yaml"),
              "--data.init_args.root", str(tmp_path / "demo"), *args])  # fmt: skip
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"aspp-seg: error: {message}"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (  # a class path of an earlier layout (aspp_seg.callbacks moved to training/)
            "trainer:\n  callbacks:\n    - class_path: aspp_seg.callbacks.EMA\n",
            "trainer.callbacks: there is no class aspp_seg.callbacks.EMA (module 'aspp_seg' "
            "has no attribute 'callbacks'): give the class's current module path",
        ),
        (  # a flat model key of an earlier layout (now model.inference.init_args.flip)
            "model:\n  flip: true\n",
            "Subcommand 'fit' does not accept option 'model.flip'",
        ),
    ],
    ids=["class_path", "key"],
)
def test_a_config_of_an_earlier_layout_is_one_line_naming_the_setting(
    setting, message, tmp_path, monkeypatch, capsys
):
    """No translation: the setting that changed is named, in one line, exit status 2."""
    old = tmp_path / "old.yaml"
    old.write_text(setting)
    demo = str(REPO / "configs" / "demo.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", demo, "--config", str(old),
              "--data.init_args.root", str(tmp_path / "demo")])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("aspp-seg: error: ") and f"{message} (aspp-seg fit --help" in err, err
    with pytest.raises(ConfigError, match=re.escape(f"config {demo} + {old}: {message}") + "$"):
        read_config(["--config", demo, "--config", str(old)])
