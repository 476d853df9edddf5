"""MKL packed-weight GEMMs: the same linear layers within float32 rounding, and only where safe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from musicdiff.models.dit import DiffusionTransformer
from musicdiff.models.inference.packed_gemm import packed_gemm_available, packed_linears

pytestmark = pytest.mark.skipif(not packed_gemm_available(), reason="PyTorch built without MKL")


class _Calls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(24, 40)
        self.b = nn.Linear(40, 8, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("shape", [(5, 24), (3, 7, 24), (2, 3, 4, 24)])
def test_packed_linears_match_and_restore(shape):
    torch.manual_seed(0)
    model = _Calls().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = model(x)
        with packed_linears(model) as n:
            assert n == 2 and "forward" in vars(model.a)
            out = model(x)
            again = model(x)
            assert set(vars(model.a)["forward"].packed) == {x.numel() // 24}  # packed once per row count
        assert "forward" not in vars(model.a) and "forward" not in vars(model.b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_packed_linears_fall_back_where_unsafe():
    torch.manual_seed(0)
    model = _Calls()
    x = torch.randn(6, 24)
    with packed_linears(model):
        y = model(x)  # autograd: nn.Linear's own path, so gradients flow and nothing is packed
        y.sum().backward()
        assert model.a.weight.grad is not None and not vars(model.a)["forward"].packed
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(x).dtype == torch.bfloat16
        assert not vars(model.a)["forward"].packed
        with torch.no_grad():
            torch.testing.assert_close(model(x.double().float()), y.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="boom"), packed_linears(model):
        raise RuntimeError("boom")
    assert "forward" not in vars(model.a)  # restored after an exception
    with packed_linears(model, enabled=False) as n:
        assert n == 0 and "forward" not in vars(model.a)


def test_packed_dit_matches_unpacked():
    torch.manual_seed(0)
    dit = DiffusionTransformer(io_channels=8, width=64, depth=2, num_heads=4, cond_token_dim=32,
                               global_cond_dim=16).eval()
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(2, 8, 12, generator=g), torch.rand(2, generator=g), torch.randn(2, 6, 32, generator=g),
            None, torch.randn(2, 16, generator=g))
    with torch.inference_mode():
        ref = dit(*args)
        with packed_linears(dit) as n:
            out = dit(*args)
    assert n == sum(type(m) is nn.Linear for m in dit.modules()) > 10
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
