"""Long-form generation (SA2 Sec. 3.4): 4m45s = 6144 latents through the real tiny DiT and a real
Oobleck decoder at the SA2 strides (2, 4, 4, 8, 8: 2048 samples per latent, 44.1 kHz stereo; narrow
channels keep it CPU-sized), decoded in chunks. Checks the length, finiteness and that chunked
decoding bounds memory: the decoder never sees more than one chunk, and the process's peak memory
beyond the output buffer does not grow with the clip length.
"""

from __future__ import annotations

import sys

import pytest
import torch
from hydra.utils import instantiate

from musicdiff.sampling import Generator

SA2_AE = ["autoencoder=oobleck_sa2", "autoencoder.latent_dim=8", "autoencoder.encoder.latent_dim=16",
          "autoencoder.encoder.channels=4", "autoencoder.decoder.channels=4"]
CHUNK, OVERLAP = 256, 32  # decode_chunk_latents, decode_overlap_latents


def _proc_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _peak_growth(fn):
    """Runs ``fn``; returns its result and the process's peak resident memory growth in bytes.

    Linux: ``/proc/self/clear_refs`` (``5``) resets the high-water mark ``VmHWM`` to the current
    resident size, so ``VmHWM`` afterwards minus ``VmRSS`` before is the peak of ``fn`` itself.
    The growth is None where the kernel does not allow the reset (some sandboxes).
    """
    before = _proc_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return fn(), None
    out = fn()
    return out, _proc_bytes("VmHWM") - before


@pytest.mark.slow
def test_long_form_285_seconds_real_dit_and_oobleck_chunked(compose_cfg):
    cfg = compose_cfg("generate", [*SA2_AE, "dit=tiny", "conditioner=lut_timing_tiny", "sampler=dpmpp_2m",
                                   "sampler.steps=2", "sampler.cfg_scale=3"])
    torch.manual_seed(0)
    ae, dit, conditioner = (instantiate(cfg[g]).eval() for g in ("autoencoder", "dit", "conditioner"))
    assert ae.downsampling_ratio == 2048 and ae.sample_rate == 44100 and ae.io_channels == 2
    sampler = instantiate(cfg.sampler)

    longest = [0]  # longest signal any decoder layer produced, in samples (or latent frames)

    def record(module, args, output):
        if torch.is_tensor(output):
            longest[0] = max(longest[0], output.shape[-1])

    hooks = [m.register_forward_hook(record) for m in ae.decoder.modules()]
    runs = {}
    try:
        for window, seconds in [(CHUNK, 11.0), (512, 23.0), (6144, 285.0)]:  # the first run warms up
            gen = Generator(ae, dit, conditioner, sampler, window_latents=window, decode_chunk_latents=CHUNK,
                            decode_overlap_latents=OVERLAP)
            longest[0] = 0
            if sys.platform == "linux":
                audio, peak = _peak_growth(lambda: gen.generate(["long ambient piece"], durations=seconds, seeds=0))
            else:
                audio, peak = gen.generate(["long ambient piece"], durations=seconds, seeds=0), None
            runs[window] = (audio[0], peak, longest[0])
    finally:
        for h in hooks:
            h.remove()

    audio, peak, longest_signal = runs[6144]
    assert gen.max_duration == pytest.approx(285.3, abs=0.1)
    assert audio.shape == (2, 285 * 44100)
    assert torch.isfinite(audio).all() and audio.std() > 1e-3
    # The decoder only ever ran on windows of CHUNK latents: its longest signal is one chunk's audio.
    assert longest_signal == CHUNK * 2048 == runs[512][2]
    if peak is not None and runs[512][1] is not None:
        # Peak memory beyond the decoded output (the only part that must grow with the clip; 96 MiB
        # here) is the same for 512 and 6144 latents. A one-pass decode of 6144 latents would hold
        # activations of 12.6 M samples x 4+ channels (>= 200 MiB each).
        output_bytes = {w: w * 2048 * 2 * 4 for w in (512, 6144)}
        extra = {w: runs[w][1] - output_bytes[w] for w in (512, 6144)}
        assert extra[6144] < extra[512] + 16 * 2**20, {w: e / 2**20 for w, e in extra.items()}
        assert extra[6144] < 100 * 2**20, extra[6144] / 2**20
