"""The SAT ``model_config.json`` of Stable Audio Open 1.0, at full or reduced size.

Stable Audio Open (SAO, arXiv 2407.14358 §2) is the SA2 architecture (Oobleck VAE, SA2 §3.1;
1536-wide 24-layer DiT, SA2 §3.3) conditioned on frozen T5-base tokens and two timing numbers.
:func:`stable_audio_open_config` writes that layout in stable-audio-tools' config format, so the
parity tests and benchmarks can build the same architecture at test size with SAT's own factory.
"""

from __future__ import annotations

from typing import Any


def stable_audio_open_config(
    *,
    ae_channels: int = 128,
    ae_c_mults: tuple[int, ...] = (1, 2, 4, 8, 16),
    ae_strides: tuple[int, ...] = (2, 4, 4, 8, 8),
    latent_dim: int = 64,
    embed_dim: int = 1536,
    depth: int = 24,
    num_heads: int = 24,
    cond_dim: int = 768,
    sample_size: int = 2097152,
    sample_rate: int = 44100,
    t5_model_name: str = "t5-base",
    max_length: int = 128,
) -> dict[str, Any]:
    """A SAT ``model_config.json`` dict with Stable Audio Open 1.0's layout.

    The defaults give the released model (SAO paper §2; VAE as SA2 §3.1, DiT 1536 × 24 layers);
    smaller values build the same architecture at test/benchmark size.

    Args:
        ae_channels: Oobleck base width.
        ae_c_mults: Oobleck width multipliers.
        ae_strides: Oobleck strides (their product is the downsampling ratio).
        latent_dim: VAE latent channels (the DiT's io_channels).
        embed_dim: DiT width.
        depth: DiT blocks.
        num_heads: DiT attention heads.
        cond_dim: conditioning token width (T5-base: 768; a T5 projection is added otherwise).
        sample_size: window in audio samples (SAO: 2097152 = 1024 latents ≈ 47.55 s).
        sample_rate: audio sample rate in Hz.
        t5_model_name: SAT's T5 name.
        max_length: T5 tokens per prompt.

    Returns:
        The config dict (JSON-serialisable).
    """
    ratio = 1
    for s in ae_strides:
        ratio *= int(s)
    oobleck = {"channels": ae_channels, "c_mults": list(ae_c_mults), "strides": list(ae_strides),
               "use_snake": True}
    number = {"min_val": 0, "max_val": 512}
    return {
        "model_type": "diffusion_cond",
        "sample_size": sample_size,
        "sample_rate": sample_rate,
        "audio_channels": 2,
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "iterate_batch": True,
                "config": {
                    "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 2 * latent_dim,
                                                              **oobleck}},
                    "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": latent_dim,
                                                              "final_tanh": False, **oobleck}},
                    "bottleneck": {"type": "vae"},
                    "latent_dim": latent_dim,
                    "downsampling_ratio": ratio,
                    "io_channels": 2,
                },
            },
            "conditioning": {
                "configs": [
                    {"id": "prompt", "type": "t5", "config": {"t5_model_name": t5_model_name,
                                                              "max_length": max_length}},
                    {"id": "seconds_start", "type": "number", "config": dict(number)},
                    {"id": "seconds_total", "type": "number", "config": dict(number)},
                ],
                "cond_dim": cond_dim,
            },
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                "global_cond_ids": ["seconds_start", "seconds_total"],
                "type": "dit",
                "config": {
                    "io_channels": latent_dim,
                    "embed_dim": embed_dim,
                    "depth": depth,
                    "num_heads": num_heads,
                    "cond_token_dim": cond_dim,
                    "global_cond_dim": 2 * cond_dim,
                    "project_cond_tokens": False,
                    "transformer_type": "continuous_transformer",
                },
            },
            "io_channels": latent_dim,
        },
    }


def stable_audio_open_small_config(
    *,
    diffusion_objective: str = "rf_denoiser",
    distribution_shift_options: dict[str, Any] | None = None,
    timestep_sampler: str | None = None,
    embed_dim: int = 1024,
    depth: int = 16,
    num_heads: int = 8,
    max_length: int = 64,
    sample_size: int = 524288,
    qk_norm: str = "ln",
    **kwargs: Any,
) -> dict[str, Any]:
    """A SAT ``model_config.json`` dict with Stable Audio Open Small's layout (arXiv 2505.08175 §2).

    SAO Small keeps SAO 1.0's Oobleck VAE and T5-base prompt (64 tokens), conditions on
    ``seconds_total`` only (``max_val`` 256, one 768-wide global vector), and trains a 1024-wide,
    16-layer, 8-head DiT with rectified flow, then ARC post-training (objective ``rf_denoiser``;
    524288 samples ≈ 11.9 s window). Unlike SAO 1.0 its DiT projects the prompt tokens to the model
    width (``project_cond_tokens`` left at SAT's default ``True``: full key/value heads in
    cross-attention) and normalises each head's queries and keys with a LayerNorm
    (``attn_kwargs.qk_norm: "ln"``). These are the option values of the released ``model_config.json``.

    Args:
        diffusion_objective: ``rectified_flow`` (the pre-trained model) or ``rf_denoiser`` (after ARC).
        distribution_shift_options: SAT's length-dependent time shift (None: none).
        timestep_sampler: SAT's ``training.timestep_sampler`` (None: not written, SAT's ``uniform``).
        embed_dim: DiT width.
        depth: DiT blocks.
        num_heads: DiT attention heads.
        max_length: T5 tokens per prompt.
        sample_size: window in audio samples.
        qk_norm: SAT's ``attn_kwargs.qk_norm`` (the release: ``"ln"``; ``"none"`` leaves it out).
        **kwargs: further arguments of :func:`stable_audio_open_config` (VAE size, ``cond_dim`` ...).

    Returns:
        The config dict (JSON-serialisable).
    """
    cfg = stable_audio_open_config(embed_dim=embed_dim, depth=depth, num_heads=num_heads, max_length=max_length,
                                   sample_size=sample_size, **kwargs)
    model = cfg["model"]
    model["conditioning"]["configs"] = [c for c in model["conditioning"]["configs"] if c["id"] != "seconds_start"]
    model["conditioning"]["configs"][-1]["config"]["max_val"] = 256
    diffusion = model["diffusion"]
    diffusion["cross_attention_cond_ids"] = ["prompt", "seconds_total"]
    diffusion["global_cond_ids"] = ["seconds_total"]
    diffusion["diffusion_objective"] = diffusion_objective
    diffusion["config"]["global_cond_dim"] = model["conditioning"]["cond_dim"]
    del diffusion["config"]["project_cond_tokens"]  # SAT's default, True, as in the release
    if qk_norm != "none":
        diffusion["config"]["attn_kwargs"] = {"qk_norm": qk_norm}
    if distribution_shift_options is not None:
        diffusion["distribution_shift_options"] = dict(distribution_shift_options)
    if timestep_sampler is not None:
        cfg["training"] = {"timestep_sampler": timestep_sampler}
    return cfg
