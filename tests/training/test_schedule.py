import pytest
import torch

from aspp_seg.training.module import poly_schedule, study_sgd


def test_poly_lr_per_iteration():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = study_sgd([param])
    scheduler = poly_schedule(optimizer, max_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for i in (0, 1, 50, 99):
        assert lrs[i] == pytest.approx(0.007 * (1 - i / 100) ** 0.9)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_warmup_then_poly_per_step():
    from aspp_seg.training.schedules import WarmupPolyLR

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.01)
    scheduler = WarmupPolyLR(optimizer, 100, warmup_steps=10, warmup_factor=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for i in range(100):
        warm = 0.1 * (1 - i / 10) + i / 10 if i < 10 else 1.0
        assert lrs[i] == pytest.approx(0.01 * warm * (1 - i / 100) ** 0.9, rel=1e-9), i
    assert lrs[0] == pytest.approx(0.001)  # warm-up starts at warmup_factor x base


def test_warmup_poly_is_poly_without_warmup_and_retargets_on_resume():
    from torch.optim.lr_scheduler import PolynomialLR

    from aspp_seg.training.schedules import WarmupPolyLR, retarget

    def lrs(make, steps):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=0.05)
        scheduler = make(optimizer)
        out = []
        for _ in range(steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out, scheduler

    ours, _ = lrs(lambda o: WarmupPolyLR(o, 40), 40)
    torch_poly, _ = lrs(lambda o: PolynomialLR(o, total_iters=40, power=0.9), 40)
    assert ours == pytest.approx(torch_poly, rel=1e-9)

    # a run of 20 steps with 5 of warm-up, extended to 60 at step 20
    factory = lambda o, total: WarmupPolyLR(o, total, warmup_ratio=0.25)  # noqa: E731
    _, scheduler = lrs(lambda o: factory(o, 20), 20)
    rebuilt = retarget(scheduler, factory, 60)
    assert rebuilt.warmup_steps == 15 and rebuilt.last_epoch == 20
    group = rebuilt.optimizer.param_groups[0]
    for step in range(20, 60):
        warm = 0.001 * (1 - step / 15) + step / 15 if step < 15 else 1.0
        assert group["lr"] == pytest.approx(0.05 * warm * (1 - step / 60) ** 0.9, rel=1e-9)
        rebuilt.optimizer.step()
        rebuilt.step()
