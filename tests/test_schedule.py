import pytest
import torch

from aspp_seg.module import poly_schedule, study_sgd


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
