"""`RunEstimate`: the one line that says how long the rest of a fit takes.

The arithmetic runs against `_fit`, a small copy of Lightning's fit loop (when it steps
the optimizer, when it validates) driven by a fake clock, so the estimate can be compared
with the time the rest of the simulated run really took; one tiny real fit shows the line
in a run's log.
"""

from __future__ import annotations

import logging
import math
import re
from types import SimpleNamespace

import pytest
import torch
from helpers import demo_args
from lightning.pytorch.accelerators import CPUAccelerator

from aspp_seg.training.callbacks import run_estimate
from aspp_seg.training.callbacks.run_estimate import (
    RunEstimate,
    duration,
    estimate_line,
    run_batches,
    validations_left,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trainer(*, batches, total, accumulate=1, val_check_batch=None, every_n_epochs=1, step=0):
    """What `RunEstimate` reads of a Trainer; `val_check_batch` None: one validation at the
    end of each epoch (``val_check_interval: 1.0``), 0: no validation."""
    return SimpleNamespace(
        global_step=step,
        estimated_stepping_batches=total,
        num_training_batches=batches,
        accumulate_grad_batches=accumulate,
        val_check_batch=batches if val_check_batch is None else val_check_batch,
        check_val_every_n_epoch=every_n_epochs,
        enable_validation=val_check_batch != 0,
        current_epoch=0,
        sanity_checking=False,
        precision="32-true",
        accelerator=None,
        callbacks=[],
    )


def _fit(trainer, *, step_s=0.5, validation_s=12.0, start=(0, 0)):
    """Drives a `RunEstimate`'s hooks as Lightning's fit loop calls them, from batch
    ``start`` = (epoch, batch index) on, each batch taking ``step_s / accumulate`` and each
    validation `validation_s` on a fake clock.

    Returns:
        The lines printed, each with the seconds the rest of the run then really took and
        the validations that then really followed.
    """
    clock, printed = Clock(), []
    callback = RunEstimate(clock=clock)
    batches, accumulate = trainer.num_training_batches, trainer.accumulate_grad_batches
    validations = 0  # run so far
    run_estimate.rank_zero_info = lambda line: printed.append((line, clock.now, validations))
    callback.on_train_start(trainer, None)
    epoch, first = start
    while trainer.global_step < trainer.estimated_stepping_batches:
        trainer.current_epoch = epoch
        for batch_idx in range(first, batches):
            callback.on_train_batch_start(trainer, None, None, batch_idx)
            clock.now += step_s / accumulate
            if (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == batches:
                trainer.global_step += 1
            callback.on_train_batch_end(trainer, None, None, None, batch_idx)
            if trainer.enable_validation and _validates(trainer, epoch, batch_idx):
                callback.on_validation_start(trainer, None)
                clock.now += validation_s
                validations += 1
            if trainer.global_step >= trainer.estimated_stepping_batches:
                break
        epoch, first = epoch + 1, 0
    return [(line, clock.now - at, validations - before) for line, at, before in printed]


def _validates(trainer, epoch: int, batch_idx: int) -> bool:
    """Lightning's ``_should_check_val_fx`` for a data set with a length."""
    every = trainer.check_val_every_n_epoch
    if every is not None and (epoch + 1) % every:
        return False
    position = batch_idx if every is not None else epoch * trainer.num_training_batches + batch_idx
    return (position + 1) % trainer.val_check_batch == 0


@pytest.fixture(autouse=True)
def _keep_rank_zero_info(monkeypatch):
    monkeypatch.setattr(run_estimate, "rank_zero_info", run_estimate.rank_zero_info)


def _numbers(line: str) -> tuple[int, int | None]:
    """(steps, validations) that a line counts."""
    steps = int(re.search(r"to go: ([\d,]+) steps", line)[1].replace(",", ""))
    validations = re.search(r"\+ ([\d,]+) validation", line)
    return steps, None if validations is None else int(validations[1].replace(",", ""))


def test_a_fresh_run_says_its_steps_then_its_validations():
    """1,000 steps in 10 epochs: the steps are timed over steps 5-20; the validations come
    into the estimate once the first has run, and then it is the time the run took."""
    trainer = _trainer(batches=100, total=1000)
    (first, _, _), (second, really, validations) = _fit(trainer)
    assert first == (
        "aspp-seg: about 8 min to go: 980 steps at 0.50 s (steps 5-20, 32-true) "
        "+ 10 validations, not timed yet"
    )
    assert second == (
        "aspp-seg: about 9 min to go: 900 steps at 0.50 s (steps 5-100, 32-true) "
        "+ 9 validations at 12 s"
    )
    assert validations == 9
    assert really == 900 * 0.5 + 9 * 12.0 and duration(really) == "9 min"


def test_a_resumed_run_counts_from_its_checkpoint():
    trainer = _trainer(batches=100, total=1000, step=500)
    (first, _, validations), _ = _fit(trainer, start=(5, 0))
    assert "to go: 480 steps at 0.50 s (steps 505-520, 32-true) + 5 validations" in first
    assert validations == 5


def test_a_run_resumed_mid_epoch():
    trainer = _trainer(batches=100, total=1000, step=550)
    lines = _fit(trainer, start=(5, 50))
    assert "430 steps at 0.50 s (steps 555-570, 32-true) + 5 validations" in lines[0][0]
    assert [_numbers(line)[1] for line, _, _ in lines] == [v for _, _, v in lines]


def test_validations_in_the_measurement_give_one_line_that_counts_them():
    """Epochs of 8 steps: the validations at steps 8 and 16 are timed before the step
    time is, and left out of it."""
    trainer = _trainer(batches=8, total=80)
    ((line, really, validations),) = _fit(trainer, step_s=2.0, validation_s=30.0)
    assert line == (
        "aspp-seg: about 6 min to go: 60 steps at 2.00 s (steps 5-20, 32-true) "
        "+ 8 validations at 30 s"
    )
    assert validations == 8 and really == 60 * 2.0 + 8 * 30.0


def test_slow_steps_are_timed_for_30_seconds():
    trainer = _trainer(batches=1000, total=1000, val_check_batch=0)
    ((line, really, _),) = _fit(trainer, step_s=4.0)
    assert line == "aspp-seg: about 66 min to go: 987 steps at 4.00 s (steps 5-13, 32-true)"
    assert really == 987 * 4.0


@pytest.mark.parametrize(
    ("batches", "accumulate", "total", "val_check_batch", "every_n_epochs"),
    [
        (100, 1, 3 * 100, None, 1),  # max_epochs 3
        (100, 1, 250, None, 1),  # max_steps mid-epoch: the last epoch does not validate
        (10, 4, 3 * 30, None, 1),  # accumulation: 3 steps an epoch (4, 8, 10 batches)
        (10, 4, 50, None, 1),
        (100, 1, 1000, 25, 1),  # val_check_interval 0.25
        (100, 1, 1000, None, 3),  # check_val_every_n_epoch 3
        (30, 2, 600, 7, 2),  # val_check_interval 7 batches every second epoch
        (30, 1, 600, 70, None),  # every 70 batches, across epochs
        (100, 1, 1000, 0, 1),  # no validation
    ],
)
def test_the_estimate_is_the_time_the_simulated_run_takes(
    batches, accumulate, total, val_check_batch, every_n_epochs
):
    trainer = _trainer(
        batches=batches,
        total=total,
        accumulate=accumulate,
        val_check_batch=val_check_batch,
        every_n_epochs=every_n_epochs,
    )
    lines = _fit(trainer)
    assert lines
    for line, really, validations in lines:
        steps, counted = _numbers(line)
        assert (counted or 0) == validations, line
        if "not timed yet" not in line:
            assert line.startswith(f"aspp-seg: about {duration(really)} to go: {steps:,}"), line


@pytest.mark.parametrize("total", [1, 9, 10])
def test_a_run_too_short_to_measure_says_nothing(total):
    assert _fit(_trainer(batches=100, total=total)) == []


def test_twelve_steps_are_measured_over_the_first_ten():
    ((line, really, _),) = _fit(_trainer(batches=100, total=12))
    assert line.startswith("aspp-seg: about 1 s to go: 2 steps at 0.50 s (steps 5-10,")
    assert really == 1.0


def test_a_run_without_an_end_says_nothing():
    """max_epochs and max_steps -1 (max_time, a signal or early stopping ends it)."""
    trainer = _trainer(batches=100, total=math.inf)
    callback = RunEstimate(clock=Clock())
    printed = []
    run_estimate.rank_zero_info = printed.append
    callback.on_train_start(trainer, None)
    for batch_idx in range(40):
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert printed == []


def test_validations_left_counts_lightnings_checks():
    # one per epoch; max_steps cuts the last epoch before its validation
    assert validations_left(done=0, end=250, batches_per_epoch=100, val_check_batch=100,
                            every_n_epochs=1) == 2  # fmt: skip
    # the one after batch `done` has run
    assert validations_left(done=100, end=300, batches_per_epoch=100, val_check_batch=100,
                            every_n_epochs=1) == 2  # fmt: skip
    # every 70 batches across epochs of 30
    assert validations_left(done=0, end=600, batches_per_epoch=30, val_check_batch=70,
                            every_n_epochs=None) == 8  # fmt: skip
    assert run_batches(steps=50, batches_per_epoch=10, accumulate=4) == 16 * 10 + 2 * 4


def test_max_time_that_ends_the_run_first_is_said():
    line = estimate_line(steps=1000, step_s=1.0, measured=(5, 20), precision="bf16-mixed",
                         validations=0, validation_s=None, time_left=600.0)  # fmt: skip
    assert line == (
        "aspp-seg: about 17 min to go: 1,000 steps at 1.00 s (steps 5-20, bf16-mixed); "
        "trainer.max_time ends it in about 10 min"
    )


def test_float32_on_a_cpu_without_native_bf16_says_so(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False})
    trainer = _trainer(batches=100, total=100, val_check_batch=0)
    trainer.accelerator = CPUAccelerator()
    ((line, _, _),) = _fit(trainer)
    assert "(steps 5-20, 32-true, no native bf16)" in line


def test_a_fit_logs_the_estimate(tiny_cityscapes, tmp_path, run_cli, caplog):
    """Four epochs of four steps (max_epochs ends the run; max_steps is far): one line
    with the validations of the remaining epochs, timed."""
    caplog.set_level(logging.INFO)
    result = run_cli(
        "fit", *demo_args(tiny_cityscapes, "--trainer.max_epochs", "4",
                          "--trainer.max_steps", "1000", "--trainer.limit_val_batches", "1",
                          "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false",
                          "--trainer.callbacks", "[]", "--trainer.default_root_dir",
                          str(tmp_path)),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [r.getMessage() for r in caplog.records if "to go:" in r.getMessage()]
    assert re.fullmatch(
        r"aspp-seg: about \d+ s to go: 6 steps at [\d.]+ m?s \(steps 5-10, [\w-]+(, no native "
        r"bf16)?\) \+ 2 validations at [\d.]+ m?s",
        line,
    ), line
