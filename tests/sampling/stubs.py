"""Closed-form denoisers and tiny stub modules for the sampling tests."""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianDenoiser:
    """Ideal denoiser for x0 ~ N(mu, s^2) per dim: E[x0 | x0 + sigma eps] = mu + s^2/(s^2+sigma^2)(x - mu)."""

    def __init__(self, mu: torch.Tensor, s: torch.Tensor) -> None:
        self.mu, self.s = mu, s
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls += 1
        var = self.s**2
        sig2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return self.mu + var / (var + sig2) * (x - self.mu)

    def ode_solution(self, x_start: torch.Tensor, sigma_start: float, sigma_end: float = 0.0) -> torch.Tensor:
        """Exact probability-flow ODE solution: x - mu scales with sqrt(s^2 + sigma^2)."""
        scale = torch.sqrt(self.s**2 + sigma_end**2) / torch.sqrt(self.s**2 + sigma_start**2)
        return self.mu + scale * (x_start - self.mu)


class MixtureDenoiser:
    """Ideal denoiser for x0 uniform on a few points per dim (nonlinear in x)."""

    def __init__(self, points=(-1.0, 0.3, 1.2)) -> None:
        self.points = torch.tensor(points, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))[..., None].to(torch.float64)
        c = self.points.to(x.device)
        logits = -((x[..., None].to(torch.float64) - c) ** 2) / (2 * s**2)
        return (logits.softmax(-1) * c).sum(-1).to(x.dtype)


class StubVDenoiser(nn.Module):
    """VDenoiser stand-in: v-objective preconditioning, t = 2/pi atan(sigma)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, sigma, **cond):
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in = 1 / (s**2 + 1), -s / (s**2 + 1) ** 0.5, 1 / (s**2 + 1) ** 0.5
        t = sigma.atan() * 2 / math.pi
        return self.model(x * c_in, t, **cond) * c_out + x * c_skip


class StubDiT(nn.Module):
    """Small linear 'DiT': v = W x + proj(mean cond tokens) + proj(global) + t term."""

    def __init__(self, io_channels: int, cond_dim: int = 8, global_dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(io_channels, io_channels, generator=g) * 0.3)
        self.c = nn.Parameter(torch.randn(io_channels, cond_dim, generator=g) * 0.5)
        self.gp = nn.Parameter(torch.randn(io_channels, global_dim, generator=g) * 0.1)
        self.calls: list[int] = []

    def forward(self, x, t, cross_attn_cond=None, cross_attn_mask=None, global_cond=None):
        self.calls.append(x.shape[0])
        out = torch.einsum("ij,bjl->bil", self.w, x) + t.reshape(-1, 1, 1) * 0.1
        if cross_attn_cond is not None:
            m = torch.ones(cross_attn_cond.shape[:2]) if cross_attn_mask is None else cross_attn_mask.float()
            pooled = (cross_attn_cond * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
            out = out + (pooled @ self.c.T)[..., None]
        if global_cond is not None:
            out = out + (global_cond @ self.gp.T)[..., None]
        return out


class StubConditioner(nn.Module):
    """Prompt -> 4 deterministic pseudo-random tokens (empty prompt: zeros); timing -> global [B, 2]."""

    cond_dim, global_cond_dim = 8, 2

    def __init__(self, tokens: int | None = 4) -> None:
        super().__init__()
        self.fixed_tokens = tokens  # None: pad to the longest prompt of the batch

    def forward(self, metadata, device):
        toks, masks, glob = [], [], []
        self.tokens = self.fixed_tokens or max(len(m["prompt"].split()) for m in metadata) or 1
        for m in metadata:
            prompt = m["prompt"]
            g = torch.Generator().manual_seed(sum(ord(ch) * (i + 1) for i, ch in enumerate(prompt)))
            n = min(len(prompt.split()), self.tokens)
            tok = torch.randn(self.tokens, self.cond_dim, generator=g)
            mask = torch.arange(self.tokens) < n
            toks.append(tok * mask[:, None])
            masks.append(mask)
            glob.append(torch.tensor([m["seconds_start"], m["seconds_total"]]) / 100.0)
        return {
            "cross_attn_cond": torch.stack(toks).to(device),
            "cross_attn_mask": torch.stack(masks).to(device),
            "global_cond": torch.stack(glob).to(device),
        }


class ShuffleAutoencoder(nn.Module):
    """Exactly invertible 'autoencoder': folds ``ratio`` samples into channels (latent_dim = C * ratio)."""

    def __init__(self, sample_rate: int = 1000, io_channels: int = 2, ratio: int = 4) -> None:
        super().__init__()
        self.sample_rate, self.io_channels, self.downsampling_ratio = sample_rate, io_channels, ratio
        self.latent_dim = io_channels * ratio
        self.chunked_calls = 0

    def encode(self, audio, sample: bool = True):
        b, c, t = audio.shape
        return audio.reshape(b, c, t // self.downsampling_ratio, self.downsampling_ratio).permute(0, 1, 3, 2).reshape(
            b, c * self.downsampling_ratio, t // self.downsampling_ratio
        )

    def decode(self, latents):
        b, d, length = latents.shape
        r = self.downsampling_ratio
        return latents.reshape(b, d // r, r, length).permute(0, 1, 3, 2).reshape(b, d // r, length * r)

    def decode_chunked(self, latents, chunk_size: int, overlap: int):
        self.chunked_calls += 1
        hop = chunk_size - overlap
        parts = [self.decode(latents[..., i : i + hop]) for i in range(0, latents.shape[-1], hop)]
        return torch.cat(parts, dim=-1)
