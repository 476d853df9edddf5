"""training/ema.py: the warmed-up EMA of both tasks, and its ZeRO-3 partition update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from musicdiff.training.ema import EMAWarmup, build_ema, update_ema


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    model.register_buffer("scale", torch.ones(3))  # a float buffer, averaged like the DiT's
    return model


def _step(model: nn.Module, k: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * (k + 1))
        model.scale.add_(1.0)


def test_warmed_up_ema_follows_the_formula():
    model = _model()
    ema = build_ema(model, 0.999, warmup_power=0.75)
    assert not any(p.requires_grad for p in ema.parameters())
    expected = [p.detach().clone() for p in model.parameters()]
    update_ema(ema, model)  # first update copies
    for k in range(3):
        _step(model, k)
        update_ema(ema, model)
        d = EMAWarmup(0.999, 0.75).decay(k + 1)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    for e, p in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(p, e)
    assert 1.0 < float(ema.module.scale[0]) < float(model.scale[0])  # buffers averaged too
    assert int(ema.n_averaged) == 4
    with pytest.raises(ValueError, match="ema beta"):
        build_ema(model, 1.0)


def test_zero3_partition_update_equals_plain_update():
    """Parameters that carry a ``ds_tensor`` (DeepSpeed ZeRO-3 partitions) are averaged partition-wise."""
    plain_model, part_model = _model(), _model()
    plain, part = build_ema(plain_model, 0.9, warmup_power=0.75), build_ema(part_model, 0.9, warmup_power=0.75)
    for module in (part_model, part.module):  # each "rank" holds its partition: here the whole flat weight
        for p in module.parameters():
            p.ds_tensor = p.data.view(-1)
    for k in range(3):
        update_ema(plain, plain_model)
        update_ema(part, part_model)
        _step(plain_model, k), _step(part_model, k)
    for a, b in zip(plain.module.state_dict().values(), part.module.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert int(part.n_averaged) == int(plain.n_averaged) == 3
