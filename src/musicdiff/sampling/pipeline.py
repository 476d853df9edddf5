"""Text-to-music generation pipeline (SA2, Evans et al. 2024, Sec. 3 and 4).

``Generator.generate`` conditions on prompt + timing (``seconds_start = 0``,
``seconds_total = duration``), samples the whole latent window with classifier-free guidance,
decodes (chunked for long windows) and trims each item to its duration: SA2 generates up to
4m45s (6144 latents) in one window and relies on the timing conditioning to put silence after
``seconds_total`` (Sec. 3.4). Options:

* negative prompts: the unconditional branch is conditioned on the negative prompt; without one it
  is the prompt's conditioning with the cross-attention tokens zeroed (stable-audio-tools).
* audio-to-audio (style transfer, SA2 Sec. 4.6): start at ``sigma = init_noise_level`` from
  ``encode(init_audio) + sigma * noise`` (flow samplers: at time ``t = init_noise_level <= 1`` from
  ``(1 - t) * encode(init_audio) + t * noise``, as stable-audio-tools' ``sample_rf``).
* the DiT's training objective (``v`` or ``rectified_flow``) and the sampler's space (``ve`` sigmas
  or ``flow`` times) pick the denoiser wrapper (:func:`musicdiff.diffusion.make_denoiser`), so
  every sampler runs every model.
* inpainting / continuation: latent replacement (:mod:`musicdiff.sampling.inpaint`); after decoding,
  the original audio is pasted back into the kept regions with a short crossfade.

Noise is drawn from one ``torch.Generator`` per item (and the SDE noise from per-item seeds), so
an item's output depends only on its own seed, prompt and settings.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.inference import fast_inference
from musicdiff.sampling.guidance import pad_tokens
from musicdiff.sampling.inpaint import InpaintDenoiser, InpaintRequest, latent_keep_mask, paste_known
from musicdiff.sampling.noise import random_seed
from musicdiff.sampling.spec import SamplerSpec

__all__ = ["PRECISIONS", "Generator"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _make_denoiser(model: nn.Module, objective: str, space: str) -> Callable[..., torch.Tensor]:
    from musicdiff.diffusion import make_denoiser  # lazy: separate part of the package

    return make_denoiser(model, objective, space)


def _as_list(value: Any, n: int, name: str) -> list[Any]:
    """Broadcasts a scalar to ``n`` items or checks a sequence has ``n`` items."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"got {len(value)} {name} for {n} prompts")
        return list(value)
    return [value] * n


def _batch_audio(audio: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """``[C, T]`` or ``[1|n, C, T]`` -> ``[n, C, T]``."""
    audio = audio[None] if audio.ndim == 2 else audio
    if audio.ndim != 3 or audio.shape[0] not in (1, n):
        raise ValueError(f"{name} must be [C, T], [1, C, T] or [{n}, C, T], got {tuple(audio.shape)}")
    return audio.expand(n, -1, -1)


class Generator:
    """Generates audio from prompts with a latent diffusion model.

    Args:
        autoencoder: ``encode(audio) -> latents``, ``decode(latents) -> audio``,
            ``decode_chunked(latents, chunk_size, overlap)``; attributes ``sample_rate``,
            ``io_channels``, ``latent_dim``, ``downsampling_ratio``.
        dit: ``dit(x, t, cross_attn_cond, cross_attn_mask, global_cond) -> v``.
        conditioner: ``conditioner(metadata: list[dict], device) -> dict`` of conditioning tensors.
        sampler: The :class:`SamplerSpec` to sample with.
        window_latents: Latent frames generated per item (the model's sample size; 6144 for SA2).
        decode_chunk_latents: Decode in chunks of this many latents when the window is longer
            (None: always decode in one pass).
        decode_overlap_latents: Overlap between decoding chunks, in latents.
        denoiser_wrapper: Builds the denoiser from ``dit``, overriding the choice by ``objective``
            and the sampler's space.
        device: Device to run on; default the DiT's device.
        precision: ``fp32`` (default), or ``bf16`` / ``fp16``: the DiT's forward passes run under
            autocast at that precision (its outputs, the guidance and the sampler's arithmetic stay
            float32). Several times faster on GPUs and on CPUs with bf16 matrix units (AMX), at
            bf16-level error (~1e-2 relative per denoiser call).
        packed_gemm: In float32 on CPU, the DiT's linear layers use MKL packed-weight GEMMs during
            sampling (:mod:`musicdiff.models.inference.packed_gemm`; ~1.1x, outputs within ~1e-5). The other
            inference fast paths (:func:`musicdiff.models.inference.fast_inference`) always apply.
        objective: What the DiT predicts (``v``, ``rectified_flow`` or ``rf_denoiser``; the
            ``diffusion`` group it was trained with, :func:`musicdiff.diffusion.objective_of`).
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        dit: nn.Module,
        conditioner: nn.Module,
        sampler: SamplerSpec,
        window_latents: int = 6144,
        decode_chunk_latents: int | None = 128,
        decode_overlap_latents: int = 32,
        denoiser_wrapper: Callable[[nn.Module], Callable[..., torch.Tensor]] | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        packed_gemm: bool = True,
        objective: str = "v",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if window_latents < 1:
            raise ValueError(f"window_latents must be >= 1, got {window_latents}")
        if decode_chunk_latents is not None and decode_overlap_latents >= decode_chunk_latents:
            raise ValueError("decode_overlap_latents must be smaller than decode_chunk_latents")
        self.autoencoder = autoencoder
        self.dit = dit
        self.conditioner = conditioner
        self.sampler = sampler
        self.window_latents = int(window_latents)
        self.decode_chunk_latents = decode_chunk_latents
        self.decode_overlap_latents = int(decode_overlap_latents)
        self.objective = objective
        self._denoiser_wrapper = denoiser_wrapper
        self.denoiser = self._build_denoiser()
        if device is None:
            param = next(iter(dit.parameters()), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.precision = precision
        self.packed_gemm = bool(packed_gemm)
        self.last_seeds: list[int] = []

    @property
    def sample_rate(self) -> int:
        return int(self.autoencoder.sample_rate)

    @property
    def ratio(self) -> int:
        return int(self.autoencoder.downsampling_ratio)

    @property
    def window_samples(self) -> int:
        return self.window_latents * self.ratio

    @property
    def max_duration(self) -> float:
        """Longest generation in seconds (the model window)."""
        return self.window_samples / self.sample_rate

    # ------------------------------------------------------------------ helpers
    def _encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Encodes ``[B, C, T]`` audio to exactly ``window_latents`` frames (mean latents)."""
        if audio.shape[1] != self.autoencoder.io_channels:
            raise ValueError(
                f"audio has {audio.shape[1]} channels, the autoencoder takes {self.autoencoder.io_channels}"
            )
        audio = audio[..., : self.window_samples].to(self.device, torch.float32)
        audio = F.pad(audio, (0, self.window_samples - audio.shape[-1]))
        encode = self.autoencoder.encode
        kwargs = {"sample": False} if "sample" in inspect.signature(encode).parameters else {}
        with fast_inference(self.autoencoder, packed_gemm=False):
            latents = encode(audio, **kwargs)
        latents = latents[..., : self.window_latents]
        return F.pad(latents, (0, self.window_latents - latents.shape[-1]))

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decodes one item ``[1, D, L]`` (chunked when longer than ``decode_chunk_latents``)."""
        chunk = self.decode_chunk_latents
        with fast_inference(self.autoencoder, packed_gemm=False):
            if chunk is not None and latents.shape[-1] > chunk:
                return self.autoencoder.decode_chunked(latents, chunk_size=chunk, overlap=self.decode_overlap_latents)
            return self.autoencoder.decode(latents)

    def _conditions(
        self, prompts: list[str], durations: list[float], negative_prompts: list[str | None] | None,
        fields: list[Mapping[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Builds the cond and uncond dicts (negative prompt or zeroed cross-attention tokens)."""
        fields = fields if fields is not None else [{}] * len(prompts)
        meta = [{**f, "prompt": p, "seconds_start": 0.0, "seconds_total": float(d)}
                for p, d, f in zip(prompts, durations, fields)]
        cond = dict(self.conditioner(meta, self.device))
        uncond = dict(cond)
        if cond.get("cross_attn_cond") is not None:
            uncond["cross_attn_cond"] = torch.zeros_like(cond["cross_attn_cond"])
        if negative_prompts is not None and any(n is not None for n in negative_prompts):
            neg_meta = [dict(m, prompt=n if n is not None else "") for m, n in zip(meta, negative_prompts)]
            neg = dict(self.conditioner(neg_meta, self.device))
            tokens, mask = neg.get("cross_attn_cond"), neg.get("cross_attn_mask")
            if tokens is not None and mask is not None:  # zero padding tokens, as SAT does
                tokens = torch.where(mask[..., None].to(torch.bool), tokens, torch.zeros_like(tokens))
                neg["cross_attn_cond"] = tokens
            has_neg = torch.tensor([n is not None for n in negative_prompts], device=self.device)
            for key in ("cross_attn_cond", "cross_attn_mask"):
                if neg.get(key) is None or uncond.get(key) is None:
                    continue
                a, b = neg[key], uncond[key]
                if a.ndim >= 2 and a.ndim == b.ndim and a.shape[1] != b.shape[1]:  # token counts differ
                    n_tok = max(a.shape[1], b.shape[1])
                    a, b = pad_tokens(a, n_tok), pad_tokens(b, n_tok)
                    cond[key] = pad_tokens(cond[key], n_tok)
                if a.shape != b.shape:
                    raise ValueError(f"negative prompt {key} shape {tuple(a.shape)} != prompt's {tuple(b.shape)}")
                uncond[key] = torch.where(has_neg.reshape(-1, *([1] * (a.ndim - 1))), a, b)
        return cond, uncond

    def _build_denoiser(self) -> Callable[..., torch.Tensor]:
        """The DiT wrapped for ``self.sampler``'s space (or by ``denoiser_wrapper``)."""
        self._denoiser_space = getattr(self.sampler, "space", "ve")
        if self._denoiser_wrapper is not None:
            return self._denoiser_wrapper(self.dit)
        return _make_denoiser(self.dit, self.objective, self._denoiser_space)

    def _precision_denoiser(self) -> Callable[..., torch.Tensor]:
        """The base denoiser, its DiT calls under autocast when ``precision`` is not fp32."""
        if self.precision == "fp32":
            return self.denoiser
        base, dtype, device_type = self.denoiser, PRECISIONS[self.precision], self.device.type

        def denoise(x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            with torch.autocast(device_type, dtype=dtype):
                out = base(x, sigma, **kwargs)
            return out.to(x.dtype)

        return denoise

    # --------------------------------------------------------------------- main
    @torch.no_grad()
    def generate(
        self,
        prompts: str | Sequence[str],
        durations: float | Sequence[float] | None = None,
        seeds: int | Sequence[int] | None = None,
        negative_prompts: str | Sequence[str | None] | None = None,
        init_audio: torch.Tensor | None = None,
        init_noise_level: float | None = None,
        inpaint: InpaintRequest | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        callback: Callable[[dict], None] | None = None,
        disable_progress: bool | None = True,
        return_latents: bool = False,
        fields: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[torch.Tensor]:
        """Generates one audio clip per prompt.

        Args:
            prompts: One prompt or a list (the batch).
            durations: Seconds per item (``seconds_total``); default the whole window.
            seeds: Seed per item (an int ``s`` gives items ``s, s+1, ...``); None draws random
                seeds. The seeds used are recorded in ``self.last_seeds``.
            negative_prompts: Negative prompt(s) for the unconditional branch (None entries: none).
            init_audio: Audio-to-audio input ``[C, T]`` or ``[B, C, T]`` at the model's sample
                rate and channel count (resample/rechannel before), padded/cropped to the window.
            init_noise_level: Starting sigma for audio-to-audio (required with ``init_audio``);
                for flow samplers the starting time in (0, 1].
            inpaint: Known audio and keep-mask for inpainting / continuation.
            steps: Overrides the sampler's step count.
            cfg_scale: Overrides the sampler's guidance scale.
            callback: Per-step sampler callback.
            disable_progress: Disables the progress bar.
            return_latents: Return the ``[D, window_latents]`` latents instead of audio.
            fields: Further metadata fields for the conditioners (e.g. ``{"bpm": 120}``), one mapping
                for the batch or one per item (:attr:`GenerationRequest.fields`).

        Returns:
            List of ``[C, round(duration * sample_rate)]`` audio tensors (or latents).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        n = len(prompts)
        if n == 0:
            raise ValueError("no prompts given")
        durations = _as_list(self.max_duration if durations is None else durations, n, "durations")
        for d in durations:
            if not 0 < float(d) <= self.max_duration + 1e-6:
                raise ValueError(
                    f"duration {d} s is outside (0, {self.max_duration:.3f}] s: the maximum duration is "
                    f"{self.max_duration:.3f} s ({self.window_latents} latents)"
                )
        if isinstance(seeds, int):
            seeds = [seeds + i for i in range(n)]
        seeds = [random_seed() if s is None else int(s) for s in _as_list(seeds, n, "seeds")]
        self.last_seeds = seeds
        if negative_prompts is not None:
            negative_prompts = _as_list(negative_prompts, n, "negative prompts")
        if init_audio is not None and init_noise_level is None:
            raise ValueError("init_audio needs init_noise_level (the starting sigma)")

        flow = getattr(self.sampler, "space", "ve") == "flow"
        if self._denoiser_wrapper is None and getattr(self.sampler, "space", "ve") != self._denoiser_space:
            self.denoiser = self._build_denoiser()  # the sampler was swapped for one of another space
        sigmas = self.sampler.sigmas(self.device, steps=steps, length=self.window_latents,
                                     sigma_max=init_noise_level if init_audio is not None else None)
        shape = (self.autoencoder.latent_dim, self.window_latents)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device)
        x = noise * sigmas[0]
        if init_audio is not None:
            init = self._encode(_batch_audio(init_audio, n, "init_audio"))
            x = x + init * (1 - sigmas[0]) if flow else init + x

        if fields is None or isinstance(fields, Mapping):
            fields = [dict(fields or {})] * n
        fields = _as_list(fields, n, "fields")
        cond, uncond = self._conditions(prompts, durations, negative_prompts, fields)
        denoiser = self.sampler.guided(self._precision_denoiser(), scale=cfg_scale)
        pinned: InpaintDenoiser | None = None
        if inpaint is not None:
            known_audio = _batch_audio(inpaint.audio, n, "inpaint audio")
            known = self._encode(known_audio)
            keep_samples = (inpaint.keep[None] if inpaint.keep.ndim == 1 else inpaint.keep).expand(n, -1)
            keep = latent_keep_mask(keep_samples, self.ratio, self.window_latents).to(self.device)
            known_noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device)
            pinned = denoiser = InpaintDenoiser(denoiser, known, keep, known_noise, flow=flow)

        packed = self.packed_gemm and self.precision == "fp32" and self.device.type == "cpu"
        with fast_inference(self.dit, packed_gemm=packed):
            latents = self.sampler.run(
                denoiser, x, extra_args={"cond": cond, "uncond": uncond}, callback=callback,
                disable=disable_progress, sigmas=sigmas, seed=seeds,
            )
        if pinned is not None:
            latents = pinned.finalize(latents)
        if return_latents:
            return list(latents.unbind(0))
        out = []
        for i, d in enumerate(durations):
            audio = self._decode(latents[i : i + 1])[0]
            if inpaint is not None:  # the original audio, exactly, in the kept regions
                audio = paste_known(audio, known_audio[i], keep_samples[i], self.sample_rate,
                                    inpaint.crossfade_seconds, inpaint.crossfade_shape)
            out.append(audio[..., : int(round(float(d) * self.sample_rate))])
        return out
