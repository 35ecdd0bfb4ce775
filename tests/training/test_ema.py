"""`aspp_seg.training.callbacks.EMA`: the decay ramps in with the update count and can follow the
run's length, validation runs on the averaged weights, checkpoints hold them where
`validate` / `load_model` read (without asking for the callback), and
``--ckpt_path last`` continues the average and its ramp.

The decay is checked on hand-made weights: a single float64 weight that SGD (lr 1, loss
(w - v)^2 / 2) sets to each batch's value v, so that the average after a few steps can be
folded by hand from the formula, computed here apart from the callback's own code.

The resume check folds the live weights of the resumed steps into the checkpoint's
average by hand (ema = d_t * ema + (1 - d_t) * w) and compares with the average the
callback reached: exact up to float32 rounding of the lerp (1e-6), and independent of the
data order, which after a resume is not that of an uninterrupted run (the train loader's
shuffle draws from the RNG of the new process).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from helpers import demo_args
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader

from aspp_seg.cli.main import main
from aspp_seg.errors import ConfigError
from aspp_seg.loading import load_model
from aspp_seg.training.callbacks import EMA

HORIZON = 0.5  # 4 of 8 steps: 8 steps move the average far from the live weights
POWER = 0.75  # EMA's default warmup_power (warmup_gamma 1)
VALUES = [3.0, -1.0, 2.0, 5.0, 0.0, 4.0]  # the hand-made weights, one per step


def ramp(updates: int, max_decay: float, *, gamma: float = 1.0, power: float = POWER) -> float:
    """timm's warm-up, written out: min(max_decay, 1 - (1 + t / gamma) ** -power)."""
    return min(max_decay, 1.0 - (1.0 + updates / gamma) ** -power)


def folded(weights: list[float], decays) -> float:
    """The EMA of `weights` by hand: a copy, then ema = d_t * ema + (1 - d_t) * w_t."""
    ema = weights[0]
    for t, weight in enumerate(weights[1:], start=1):
        ema = decays(t) * ema + (1.0 - decays(t)) * weight
    return ema


class OneWeight(LightningModule):
    """One float64 weight that each step sets to its batch's value: w - (w - v) = v."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return 0.5 * ((self.weight - batch) ** 2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)


def _fit_one_weight(
    ema: EMA, values: list[float], *, ckpt_path: Path | None = None, **trainer_args
) -> OneWeight:
    """Trains `OneWeight` through `values` (one batch each, every epoch); returns the
    module, which holds the average once fit has ended."""
    module = OneWeight()
    trainer = Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[ema],
        **{"max_epochs": 1, **trainer_args},
    )  # fmt: skip
    loader = DataLoader(torch.tensor(values, dtype=torch.float64), batch_size=1)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module


@pytest.mark.parametrize(
    ("settings", "decays"),
    [
        ({"decay": 0.6}, lambda t: ramp(t, 0.6)),  # ramp, then capped from t = 3
        ({"decay": 0.6, "warmup": False}, lambda t: 0.6),  # torch's constant EMA
        ({"decay": 0.99, "warmup_gamma": 2.0, "warmup_power": 1.0}, lambda t: t / (2.0 + t)),
        ({"horizon": 0.5}, lambda t: ramp(t, 1 - 1 / (0.5 * len(VALUES)))),  # cap from t = 4
    ],
    ids=["ramp", "constant", "gamma-power", "horizon"],
)
def test_decay_ramp_on_hand_made_weights(settings, decays):
    module = _fit_one_weight(EMA(**settings), VALUES)
    assert module.weight.item() == pytest.approx(folded(VALUES, decays), rel=1e-12)
    assert folded(VALUES, decays) != pytest.approx(VALUES[-1])  # the average lags


def test_horizon_decay_follows_the_run_length():
    ema = EMA(horizon=0.25)
    _fit_one_weight(ema, VALUES * 2, max_epochs=2)  # 24 steps: 6 remembered
    assert ema.max_decay == pytest.approx(1 - 1 / 6)
    assert ema.decay_at(0) == 0.0  # the first update copies
    assert ema.decay_at(1) == pytest.approx(1 - 2**-POWER)
    assert ema.decay_at(100) == pytest.approx(1 - 1 / 6)
    short = EMA(horizon=0.25)
    _fit_one_weight(short, VALUES[:2])  # 2 steps: half a step remembered, floored at 0
    assert short.max_decay == 0.0


def test_resume_continues_the_ramp_and_extension_recomputes_the_decay(tmp_path):
    # gradient accumulation: the first batch after the resume takes no optimizer step, so
    # the average must know it already folded the checkpoint's step
    ema = EMA(horizon=0.5)
    first = _fit_one_weight(ema, VALUES, accumulate_grad_batches=2)  # 3 steps
    path = tmp_path / "one.ckpt"
    first.trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert "EMA" not in str(checkpoint.get("callbacks", {}))
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 3

    resumed = EMA(horizon=0.5)
    second = _fit_one_weight(
        resumed, VALUES, accumulate_grad_batches=2, max_epochs=3, ckpt_path=path
    )  # extended: 9 steps in all, 6 of them now
    live = [(a + b) / 2 for a, b in zip(VALUES[::2], VALUES[1::2], strict=True)] * 3
    caps = {t: 1 - 1 / (0.5 * (3 if t < 3 else 9)) for t in range(9)}
    expected = folded(live, lambda t: ramp(t, caps[t]))
    assert int(resumed._average_model.n_averaged) == 9
    assert second.weight.item() == pytest.approx(expected, rel=1e-12)
    assert resumed.max_decay == pytest.approx(1 - 1 / 4.5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"decay": 1.5}, r"decay=1.5 must lie in \[0, 1\]"),
        ({"horizon": 0.0}, r"horizon=0.0 must lie in \(0, 1\]"),
        ({"horizon": 2.0}, r"horizon=2.0 must lie in \(0, 1\]"),
        ({"warmup_power": -1.0}, r"warmup_power=-1.0 must be > 0"),
        ({"warmup_gamma": 0.0}, r"warmup_gamma=0.0 .* must be > 0"),
    ],
)
def test_ema_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        EMA(**settings)


def test_horizon_needs_a_run_of_known_length():
    with pytest.raises(ConfigError, match="needs a run of known length"):
        _fit_one_weight(EMA(horizon=0.1), VALUES, max_epochs=-1, max_steps=-1)


CALLBACKS = f"""
trainer:
  callbacks:
    - class_path: aspp_seg.training.callbacks.ModelCheckpoint
      init_args: {{monitor: val/mIoU, mode: max, save_last: true, filename: "best-{{epoch:02d}}"}}
    - class_path: aspp_seg.training.callbacks.EMA
      init_args: {{horizon: {HORIZON}}}
    - class_path: test_ema.Record
"""

WITHOUT_EMA = """
trainer:
  callbacks:
    - class_path: aspp_seg.training.callbacks.ModelCheckpoint
      init_args: {monitor: val/mIoU, mode: max, save_last: true, filename: "best-{epoch:02d}"}
"""

SEEN: dict[str, dict] = {"val": {}, "val_end": {}, "live": {}}
"""What `Record` saw, by global step (one process: the CLI runs in the test's)."""


def _net_state(pl_module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


class Record(Callback):
    """The weights validation ran with, and the live weights after each step."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            SEEN["val"][trainer.global_step] = _net_state(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            SEEN["val_end"][trainer.global_step] = _net_state(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        SEEN["live"][trainer.global_step] = _net_state(pl_module)  # after EMA's update


def _fit(root: Path, extra: Path, *more: str) -> None:
    main(["fit", *demo_args(root, "--trainer.log_every_n_steps", "1",
                            "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps",
                            "0", *more, configs=[extra])])  # fmt: skip


def _net_part(state: dict) -> dict[str, torch.Tensor]:
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def _assert_equal(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **(tolerance or {"rtol": 0, "atol": 0}))


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_ema_evaluates_saves_and_resumes_the_average(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seen in SEEN.values():
        seen.clear()
    extra = tmp_path / "ema.yaml"
    extra.write_text(CALLBACKS)
    _fit(tiny_cityscapes, extra, "--trainer.max_epochs", "2")
    last = tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 8
    ema, live = _net_part(checkpoint["state_dict"]), _net_part(checkpoint["current_model_state"])
    assert _differs(ema, live)

    # (a) validation ran on the average, and callbacks after it (overlays) still see it
    _assert_equal(SEEN["val"][8], ema)
    _assert_equal(SEEN["val_end"][8], ema)
    _assert_equal(SEEN["live"][8], live)  # training itself on the live weights
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 8

    # (b) what `validate` / `test` / `predict` / `export` and `load_model` read
    loaded = load_model(last)
    _assert_equal({k: v.cpu() for k, v in loaded.net.state_dict().items()}, ema)

    # (c) resumed and extended (8 -> 12 steps): the average continues from the
    # checkpoint's over the live weights, its ramp from t = 8, its cap from the new length
    SEEN["live"].clear()
    _fit(tiny_cityscapes, extra, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 12
    assert sorted(SEEN["live"]) == [9, 10, 11, 12]
    expected = {k: v.double() for k, v in ema.items()}
    for step in sorted(SEEN["live"]):
        decay = ramp(step - 1, 1 - 1 / (HORIZON * 12))  # t = step - 1 updates before
        for key, weight in SEEN["live"][step].items():
            if weight.is_floating_point():
                expected[key] = decay * expected[key] + (1 - decay) * weight.double()
    averaged = _net_part(resumed["state_dict"])
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-6, atol=1e-7, msg=key)
    _assert_equal(_net_part(resumed["current_model_state"]), SEEN["live"][12])
    assert int(resumed["averaging_state"]["n_averaged"]) == 12


def test_evaluating_an_ema_checkpoint_does_not_ask_for_the_callback(
    tiny_cityscapes, tmp_path, monkeypatch, capfd
):
    """`validate` with or without the EMA in its callbacks prints no "Please add the
    following callbacks: ['EMA']" (Lightning) nor "loading a checkpoint outside the 'fit'
    stage" (WeightAveraging): the checkpoint's state_dict already holds the average."""
    monkeypatch.chdir(tmp_path)
    extra = tmp_path / "ema.yaml"
    extra.write_text(CALLBACKS)
    _fit(tiny_cityscapes, extra, "--trainer.max_epochs", "1")
    run = tmp_path / "runs" / "demo" / "version_0"
    without = tmp_path / "without_ema.yaml"
    without.write_text(WITHOUT_EMA)
    capfd.readouterr()
    for configs in (["--config", str(without)], []):  # the EMA removed, and as trained
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            main(["validate", "--config", str(run / "config.yaml"), *configs,
                  "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                  "--trainer.limit_val_batches", "1",
                  "--trainer.enable_progress_bar", "false"])  # fmt: skip
        printed = capfd.readouterr()
        said = "\n".join([printed.out, printed.err, *(str(w.message) for w in caught)])
        assert "val/mIoU" in said  # the validation ran and printed its metrics
        assert "Please add the following callbacks" not in said
        assert "WeightAveraging" not in said
