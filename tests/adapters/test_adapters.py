"""Adapters on the DiT (issue 12 §3): LoRA / DoRA / LoRA-XS math, frozen base, scale 0, stacking,
noise-level gating, merge, adapter files (atomic, base hash, nothing pickled) and spec parsing."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from musicdiff.adapters import (
    AdapterBaseMismatchError,
    AdapterError,
    AdapterSpec,
    adapter_parameters,
    attach_adapter,
    base_weights_hash,
    freeze_base,
    is_adapter_key,
    load_adapters,
    merge_adapters,
    parse_adapter_specs,
    read_adapter,
    relative_weight_change,
    save_adapter,
    scaled,
    set_scale,
)
from musicdiff.models.dit import DiffusionTransformer

KINDS = ["lora", "dora", "lora_xs"]


def make_dit(seed: int = 0) -> DiffusionTransformer:
    """A tiny DiT with every weight random (no zero-initialised branches, so every layer matters)."""
    torch.manual_seed(seed)
    dit = DiffusionTransformer(8, 32, 2, 2, cond_token_dim=16, global_cond_dim=32)
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return dit.eval()


def inputs(b: int = 3, t=(0.1, 0.5, 0.9)):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, 8, 12, generator=g), torch.tensor(t[:b]), torch.randn(b, 5, 16, generator=g), None,
            torch.randn(b, 32, generator=g))


def perturb(dit, std: float = 0.2, seed: int = 3) -> None:
    """Stand-in for training: random adapter weights (LoRA's B starts at 0, so a fresh adapter is a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(dit):
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_adapter_is_identity_and_only_adapter_params_train(kind):
    dit = make_dit()
    base = dit(*inputs())
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    s = attach_adapter(dit, AdapterSpec(kind, rank=4, alpha=8))
    freeze_base(dit)
    assert len(s.names) == 2 * (2 + 3 + 2)  # per block: to_qkv,to_out / to_q,to_kv,to_out / ff.0.proj,ff.2
    assert torch.equal(dit(*inputs()), base)
    trainable = {n for n, p in dit.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter_key(n) for n in trainable)
    # a few optimiser steps: the output moves, every base weight stays bit-identical
    dit.train()
    opt = torch.optim.AdamW(adapter_parameters(dit), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        dit(*inputs()).square().mean().backward()
        opt.step()
    assert not torch.allclose(dit.eval()(*inputs()), base, atol=1e-4)
    after = dit.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p.grad is None for n, p in dit.named_parameters() if not is_adapter_key(n))


@pytest.mark.parametrize("kind", KINDS)
def test_scale_zero_is_exactly_the_base_and_merge_matches(kind):
    dit = make_dit()
    base = dit(*inputs())
    attach_adapter(dit, AdapterSpec(kind, rank=4, alpha=4))
    perturb(dit)
    adapted = dit(*inputs())
    assert (adapted - base).abs().max() > 1e-3
    with scaled(dit, 0.0):
        assert torch.equal(dit(*inputs()), base)
    merged = merge_adapters(dit)
    assert not any(is_adapter_key(k) for k in merged.state_dict())
    assert merged.state_dict().keys() == make_dit().state_dict().keys()
    assert (merged(*inputs()) - adapted).abs().max() < 1e-5
    # scale s is the layer W + s·ΔW: merging at 0.5 matches the adapted model at 0.5
    set_scale(dit, 0.5)
    assert (merge_adapters(dit)(*inputs()) - dit(*inputs())).abs().max() < 1e-5


def test_lora_matches_its_definition():
    """Δy of one layer is (α/r)·x Aᵀ Bᵀ (LoRA eq. 3), and DoRA's merged row norms equal its magnitude."""
    dit = make_dit()
    layer = dit.transformer.layers[0].ff.ff[2]
    x = torch.randn(4, layer.in_features)
    ref = layer(x)
    s = attach_adapter(dit, AdapterSpec("lora", rank=2, alpha=6, targets=[r"transformer\.layers\.0\.ff\.ff\.2"]))
    perturb(dit)
    mod = s.layer("transformer.layers.0.ff.ff.2")
    want = ref + 3.0 * x @ mod.lora_A.T @ mod.lora_B.T
    assert torch.allclose(layer(x), want, atol=1e-6)
    dora = make_dit()
    d = attach_adapter(dora, AdapterSpec("dora", rank=2, alpha=2))
    perturb(dora)
    merged = merge_adapters(dora)
    w = merged.transformer.layers[1].cross_attn.to_kv.weight
    m = d.layer("transformer.layers.1.cross_attn.to_kv").magnitude
    assert torch.allclose(w.norm(dim=1), m, atol=1e-5)


def test_adapters_stack_as_a_sum_of_updates(tmp_path):
    """Two files at scales 0.8 and 0.5 act as the weights W + 0.8·ΔW_lora + 0.5·ΔW_dora, each ΔW taken
    from merging that adapter alone."""
    dit = make_dit()
    base = dit(*inputs())
    expected = {k: v.clone() for k, v in dit.state_dict().items()}
    for i, (kind, scale) in enumerate([("lora", 0.8), ("dora", 0.5)]):
        one = make_dit()
        attach_adapter(one, AdapterSpec(kind, rank=2, targets=["cross_attn", "ff"]))
        perturb(one, std=0.05, seed=i)
        save_adapter(tmp_path / f"{kind}.safetensors", one)
        set_scale(one, scale)
        for k, v in merge_adapters(one).state_dict().items():
            expected[k] += v - dit.state_dict()[k]
    names = load_adapters(dit, [f"{tmp_path / 'lora.safetensors'}:0.8", (tmp_path / "dora.safetensors", 0.5)])
    assert names == ["lora", "dora"]
    reference = make_dit()
    reference.load_state_dict(expected)
    stacked = dit(*inputs())
    assert (stacked - base).abs().max() > 1e-3
    assert (stacked - reference(*inputs())).abs().max() < 1e-5
    assert (merge_adapters(dit)(*inputs()) - stacked).abs().max() < 1e-5
    set_scale(dit, 0.0)
    assert torch.equal(dit(*inputs()), base)


def test_noise_level_interval_gates_per_sample():
    dit = make_dit()
    base = dit(*inputs())
    attach_adapter(dit, AdapterSpec("lora", rank=4, t_interval=[0.3, 0.6]))
    perturb(dit)
    out = dit(*inputs())  # t = 0.1, 0.5, 0.9: only the middle sample is adapted
    assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])
    assert (out[1] - base[1]).abs().max() > 1e-3
    # the same sample alone (scalar t) gets the same output as inside the mixed batch
    x, t, c, m, g = inputs()
    alone = dit(x[1:2], t[1], c[1:2], m, g[1:2])
    assert torch.allclose(alone[0], out[1], atol=1e-5)
    with pytest.raises(AdapterError, match="cannot be merged"):
        merge_adapters(dit)


def test_adapter_file_round_trip_atomic_and_refuses_another_base(tmp_path):
    dit = make_dit()
    attach_adapter(dit, AdapterSpec("dora", rank=3, alpha=6, dropout=0.1, targets=["self_attn"], t_interval=[0, 0.5]))
    perturb(dit)
    path = save_adapter(tmp_path / "sub" / "a.safetensors", dit)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.safetensors"]  # no temp file left
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = list(fh.keys())
    assert meta["format"] == "musicdiff-adapter" and meta["base_hash"] == base_weights_hash(make_dit())
    spec = json.loads(meta["spec"])
    assert spec == {"kind": "dora", "rank": 3, "alpha": 6.0, "dropout": 0.1, "targets": ["self_attn"],
                    "t_interval": [0.0, 0.5]}
    assert all(k.startswith("transformer.layers.") for k in keys) and len(keys) == 4 * 3  # A, B, m per layer
    assert path.stat().st_size < 20_000
    info, _ = read_adapter(path)
    assert info["spec"] == AdapterSpec(**spec)

    fresh = make_dit()
    load_adapters(fresh, [path])
    assert torch.equal(fresh(*inputs()), dit(*inputs()))
    other = make_dit(seed=1)
    with pytest.raises(AdapterBaseMismatchError) as err:
        load_adapters(other, [path])
    msg = str(err.value)
    assert str(path) in msg and meta["base_hash"] in msg and base_weights_hash(other) in msg
    assert not hasattr(other, "adapters") or not other.adapters.sets


def test_bad_adapter_files_and_specs_fail_with_one_clear_line(tmp_path):
    dit = make_dit()
    with pytest.raises(AdapterError, match="adapter file not found: .*missing.safetensors"):
        load_adapters(dit, [tmp_path / "missing.safetensors"])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterError, match="junk.safetensors: not a readable"):
        load_adapters(dit, [junk])
    with pytest.raises(AdapterError, match="matches no linear layer"):
        attach_adapter(make_dit(), AdapterSpec("lora", targets=[r"no\.such\.layer"]))
    with pytest.raises(AdapterError, match="adapter kind must be one of"):
        AdapterSpec("lorra")
    with pytest.raises(AdapterError, match="t_interval"):
        AdapterSpec("lora", t_interval=[0.8, 0.2])
    with pytest.raises(AdapterError, match="non-finite"):
        d = make_dit()
        attach_adapter(d, AdapterSpec("lora"))
        with torch.no_grad():
            adapter_parameters(d)[0][0, 0] = float("nan")
        save_adapter(tmp_path / "nan.safetensors", d)
    assert not (tmp_path / "nan.safetensors").exists()


def test_parse_adapter_specs():
    assert parse_adapter_specs(["a.safetensors:0.8", "dir/b.safetensors", ("c.safetensors", 0)]) == [
        (__import__("pathlib").Path("a.safetensors"), 0.8), (__import__("pathlib").Path("dir/b.safetensors"), 1.0),
        (__import__("pathlib").Path("c.safetensors"), 0.0)]
    assert parse_adapter_specs(["C:/x/a.safetensors"])[0][1] == 1.0
    assert parse_adapter_specs(None) == []
    with pytest.raises(AdapterError, match="scale must be finite"):
        parse_adapter_specs(["a.safetensors:nan"])


def test_relative_weight_change_and_deepcopy():
    dit = make_dit()
    attach_adapter(dit, AdapterSpec("lora", rank=2))
    assert set(relative_weight_change(dit).values()) == {0.0}  # B = 0 at start
    perturb(dit)
    rel = relative_weight_change(dit)
    assert all(v > 0 for v in rel.values())
    twin = copy.deepcopy(dit)  # hooks follow the copy's own adapter weights
    with torch.no_grad():
        for p in adapter_parameters(twin):
            p.zero_()
    assert not torch.equal(twin(*inputs()), dit(*inputs()))
    set_scale(dit, 0.0)
    assert torch.equal(twin(*inputs()), dit(*inputs()))
