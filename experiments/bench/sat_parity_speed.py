"""musicdiff vs stable-audio-tools (SAT) side by side: same weights, same inputs, equal outputs, speed.

One Stable Audio Open-shaped model (``musicdiff.reference.stable_audio_open_config``) is built by
SAT's own ``create_model_from_config`` with random weights and converted into musicdiff's modules
(``musicdiff.reference.sat_weights``). Each workload then runs on both in the same process,
alternating SAT and musicdiff, and reports the median wall time, the ratio
``SAT time / musicdiff time`` (> 1: musicdiff is faster) and the largest difference of the
outputs relative to their scale:

* ``dit_train``: one v-objective training step (forward + backward) of the DiT. SAT recomputes
  every block in the backward pass (activation checkpointing is hard-wired in its training
  path); musicdiff is timed without (``dit_train``) and with (``dit_train_ckpt``) checkpointing.
* ``dit_infer``: one classifier-free-guided denoiser evaluation (cond + uncond batch), as inside
  the sampler.
* ``ae_encode`` / ``ae_decode``: VAE encode (posterior sample, same seed) and decode.
* ``generate``: prompt → T5 + timing conditioning → DPM-Solver++(2M) with CFG 7 → decoded audio
  (SAT's ``generate_diffusion_cond`` vs musicdiff's ``Generator``), the same seed.

Both sides run under ``torch.inference_mode`` except the training step, musicdiff's inside its
inference switch ``musicdiff.models.inference.fast_inference`` (``--no-fast-inference``: the plain
model files). On CPU the timings are
the process's CPU time (one thread by default), so other jobs on a shared machine inflate them
less than wall-clock time (also printed); on GPU they are wall-clock times. Examples::

    python experiments/bench/sat_parity_speed.py                       # moderate CPU size, 1 thread
    python experiments/bench/sat_parity_speed.py --device cuda --size sao --steps 100 --repeats 5
    python experiments/bench/sat_parity_speed.py --compile             # torch.compile musicdiff's DiT + VAE

The T5 encoder is a random 2-layer model as wide as t5-base unless ``--t5 /path/to/t5-base``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SIZES = {  # VAE base width, latent dim, DiT width/depth/heads, token width, window (latents), audio (latents)
    "tiny": dict(ae_channels=8, latent_dim=16, embed_dim=128, depth=2, num_heads=2, cond_dim=64, latents=32,
                 audio_latents=8),
    "moderate": dict(ae_channels=32, latent_dim=64, embed_dim=768, depth=6, num_heads=12, cond_dim=768, latents=256,
                     audio_latents=64),
    "sao": dict(ae_channels=128, latent_dim=64, embed_dim=1536, depth=24, num_heads=24, cond_dim=768, latents=1024,
                audio_latents=256),
}
PROMPT = "warm analog synth arpeggio over a slow hip hop beat, 90 BPM"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_diff(ours, ref) -> float:
    """Largest absolute difference relative to the reference's largest magnitude (callables: of
    what they return, for outputs assembled after timing)."""
    ours, ref = ours() if callable(ours) else ours, ref() if callable(ref) else ref
    ours, ref = ours.detach().float(), ref.detach().float()
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _clock(device: torch.device) -> float:
    """CPU time of this process on CPU (robust to other jobs on a shared machine), wall time on GPU."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def compare(name: str, ref_fn, ours_fn, device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Alternate the two callables ``repeats`` times after ``warmup`` calls; median seconds + outputs."""
    for _ in range(warmup):
        ref_out, ours_out = ref_fn(), ours_fn()
    times: dict[str, list[float]] = {"ref": [], "ours": [], "ref_wall": [], "ours_wall": []}
    for _ in range(repeats):
        for side, fn in (("ref", ref_fn), ("ours", ours_fn)):
            _sync(device)
            start, wall = _clock(device), time.perf_counter()
            out = fn()
            _sync(device)
            times[side].append(_clock(device) - start)
            times[side + "_wall"].append(time.perf_counter() - wall)
            if side == "ref":
                ref_out = out
            else:
                ours_out = out
    ref_s, ours_s = statistics.median(times["ref"]), statistics.median(times["ours"])
    return {"name": name, "ref_s": ref_s, "ours_s": ours_s, "ratio": ref_s / ours_s,
            "diff": rel_diff(ours_out, ref_out), "ref_wall": statistics.median(times["ref_wall"]),
            "ours_wall": statistics.median(times["ours_wall"]), "ceiling": None}


# Matrix-product, attention and convolution kernels: the work both implementations must do.
KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
           "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::convolution_backward",
           "aten::slow_conv_transpose2d", "aten::mkldnn_convolution_transpose")


def kernel_share(fn, device: torch.device) -> float:
    """Fraction of ``fn``'s profiled self time spent in :data:`KERNELS` and attention kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    events = prof.key_averages()
    use_cuda = device.type == "cuda"
    time_of = (lambda e: e.self_device_time_total) if use_cuda else (lambda e: e.self_cpu_time_total)
    total = sum(time_of(e) for e in events)
    if use_cuda:  # on GPU every device kernel is matrix/attention/conv or glue; count GEMM/attention/conv names
        hit = [e for e in events if any(k in e.key.lower() for k in ("gemm", "sgemm", "attention", "flash", "conv",
                                                                     "cutlass", "xmma", "sm90", "sm80"))]
    else:
        hit = [e for e in events if e.key in KERNELS or "attention" in e.key]
    return sum(time_of(e) for e in hit) / max(total, 1e-9)


def add_ceiling(result: dict, fn, device: torch.device, seconds: float) -> dict:
    """``ceiling``: SAT's time over the kernel time of ``fn`` (which took ``seconds``): the largest
    speed-up any implementation issuing the same matrix/attention/convolution kernels can reach."""
    result["ceiling"] = result["ref_s"] / (kernel_share(fn, device) * seconds)
    return result


def build(args: argparse.Namespace, device: torch.device):
    """SAT model (random weights) and musicdiff modules holding the same weights."""
    sys.path.insert(0, str(ROOT))
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from musicdiff.reference import sat_to_musicdiff, stable_audio_open_config
    from musicdiff.reference.sat_reference import build_sat_model
    from musicdiff.reference.sat_weights import sat_to_musicdiff as convert
    from tests.helpers.stable_audio_tools import randomize_

    size = dict(SIZES[args.size])
    latents, audio_latents = size.pop("latents"), size.pop("audio_latents")
    args.latents = args.latents or latents
    args.audio_latents = args.audio_latents or audio_latents
    config = stable_audio_open_config(**size, sample_size=args.latents * 2048)
    t5 = args.t5
    if t5 is None:
        from tests.helpers.tiny_text_models import make_tiny_t5

        t5 = make_tiny_t5(Path(tempfile.mkdtemp()) / "t5", d_model=768)
    torch.manual_seed(0)
    ref = build_sat_model(config, t5_path=t5)
    randomize_(ref, seed=1)
    ref = ref.to(device).eval()
    groups = OmegaConf.create(sat_to_musicdiff(config, t5_path=t5))
    tensors = convert(ref.state_dict())
    ours = {}
    for name in ("autoencoder", "dit", "conditioner"):
        ours[name] = instantiate(groups[name])
        ours[name].load_state_dict(tensors[name], strict=True)
        ours[name].to(device).eval()
    return ref, ours


def run(args: argparse.Namespace) -> list[dict]:
    from musicdiff.diffusion import VDenoiser
    from musicdiff.models.inference import fast_inference
    from musicdiff.reference.sat_reference import load_k_diffusion
    from musicdiff.sampling import SamplerSpec
    from musicdiff.sampling.dpmpp import sample_dpmpp_2m
    from musicdiff.sampling.guidance import CFGDenoiser
    from musicdiff.sampling.pipeline import PRECISIONS, Generator

    device = torch.device(args.device)
    ref, ours = build(args, device)
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    k_diffusion = load_k_diffusion()
    dit, ae, cond = ours["dit"], ours["autoencoder"], ours["conditioner"]
    run_dit = dit
    if args.compile:  # musicdiff side only; SAT runs eagerly as published (its ENABLE_TORCH_COMPILE is unset)
        run_dit = torch.compile(dit, dynamic=False)
        ae.encoder, ae.decoder = torch.compile(ae.encoder, dynamic=False), torch.compile(ae.decoder, dynamic=False)
    gen = torch.Generator().manual_seed(0)
    b, d, n = args.batch, dit.io_channels, args.latents
    seconds = n * 2048 / 44100
    meta = [{"prompt": PROMPT, "seconds_start": 0.0, "seconds_total": seconds}] * b
    with torch.inference_mode():
        c = cond(meta, device)
        ref_c = ref.get_conditioning_inputs(ref.conditioner(meta, device))
    x = torch.randn(b, d, n, generator=gen).to(device)
    t = torch.rand(b, generator=gen).to(device)
    target = torch.randn(b, d, n, generator=gen).to(device)
    results = []
    modes = args.only or ["dit_train", "dit_infer", "ae_encode", "ae_decode", "generate"]

    if "dit_train" in modes:
        cross, glob = c["cross_attn_cond"].clone(), c["global_cond"].clone()

        def train_step(model, **kwargs):
            model.train().zero_grad(set_to_none=True)
            loss = (model(x, t, cross_attn_cond=cross, **kwargs) - target).square().mean()
            loss.backward()
            model.eval()
            params = dict(getattr(model, "_orig_mod", model).named_parameters())  # same names on both sides
            # flattened after timing (compare keeps each side's last result; its .grad stays until the next step)
            return lambda: torch.cat([params[k].grad.flatten() for k in sorted(params) if params[k].grad is not None])

        ref_dit = ref.model.model
        for ckpt, name in ((False, "dit_train"), (True, "dit_train_ckpt")):
            dit.gradient_checkpointing = ckpt
            ours_step = lambda: train_step(run_dit, global_cond=glob)  # noqa: E731
            results.append(compare(name, lambda: train_step(ref_dit, global_embed=glob), ours_step, device,
                                   args.repeats))
            if args.ceiling and not ckpt:  # SAT's recomputed forward is not work a trainer must do
                add_ceiling(results[-1], ours_step, device, results[-1]["ours_s"])
        dit.gradient_checkpointing = False
        ref_dit.zero_grad(set_to_none=True), dit.zero_grad(set_to_none=True)

    # musicdiff's inference fast paths (musicdiff.models.inference), switched on as the Generator does
    fast = fast_inference(ae, run_dit, packed_gemm=args.packed_gemm and device.type == "cpu",
                          enabled=args.fast_inference)
    with torch.inference_mode(), fast:
        if "dit_infer" in modes:
            sigma = torch.full((b,), 2.5, device=device)
            ref_den = k_diffusion.external.VDenoiser(ref.model)
            ours_den = CFGDenoiser(VDenoiser(run_dit), scale=7.0)
            uncond = dict(c, cross_attn_cond=torch.zeros_like(c["cross_attn_cond"]))
            ref_infer = lambda: ref_den(x, sigma, **ref_c, cfg_scale=7.0)  # noqa: E731
            results.append(compare("dit_infer", ref_infer, lambda: ours_den(x, sigma, cond=c, uncond=uncond),
                                   device, args.repeats))
            if args.ceiling:
                add_ceiling(results[-1], ref_infer, device, results[-1]["ref_s"])
            if args.precision != "fp32":
                low = PRECISIONS[args.precision]

                def ours_low():
                    with torch.autocast(device.type, dtype=low):
                        return ours_den(x, sigma, cond=c, uncond=uncond)

                results.append(compare(f"dit_infer_{args.precision}", ref_infer, ours_low, device, args.repeats))
        audio = 0.5 * torch.randn(1, 2, args.audio_latents * 2048, generator=gen).to(device)

        def seeded(fn):
            def call():
                torch.manual_seed(3)
                return fn()
            return call

        if "ae_encode" in modes:
            ref_enc = seeded(lambda: ref.pretransform.encode(audio))
            results.append(compare("ae_encode", ref_enc, seeded(lambda: ae.encode(audio, sample=True)), device,
                                   args.repeats))
            if args.ceiling:
                add_ceiling(results[-1], ref_enc, device, results[-1]["ref_s"])
        if "ae_decode" in modes:
            z = torch.randn(1, d, args.audio_latents, generator=gen).to(device)
            ref_dec = lambda: ref.pretransform.decode(z)  # noqa: E731
            results.append(compare("ae_decode", ref_dec, lambda: ae.decode(z), device, args.repeats))
            if args.ceiling:
                add_ceiling(results[-1], ref_dec, device, results[-1]["ref_s"])
        if "generate" in modes:
            spec = SamplerSpec(sample_dpmpp_2m, steps=args.steps, sigma_min=0.3, sigma_max=500.0, rho=1.0,
                               cfg_scale=7.0)
            pipe = Generator(ae, run_dit, cond, spec, window_latents=n, decode_chunk_latents=None, device=device,
                             packed_gemm=args.packed_gemm)

            def ref_generate():
                with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                    return generate_diffusion_cond(
                        ref, steps=args.steps, cfg_scale=7.0, conditioning=meta[:1], sample_size=n * 2048, seed=5,
                        device=str(device), sampler_type="dpmpp-2m", sigma_min=0.3, sigma_max=500.0, rho=1.0)[0]

            results.append(compare("generate", ref_generate, lambda: pipe.generate(PROMPT, durations=seconds, seeds=5)[0],
                                   device, args.gen_repeats, warmup=1 if args.compile else 0))
            if args.ceiling:
                add_ceiling(results[-1], ref_generate, device, results[-1]["ref_s"])
            if args.precision != "fp32":
                low_pipe = Generator(ae, run_dit, cond, spec, window_latents=n, decode_chunk_latents=None,
                                     device=device, precision=args.precision)
                results.append(compare(f"generate_{args.precision}", ref_generate,
                                       lambda: low_pipe.generate(PROMPT, durations=seconds, seeds=5)[0], device,
                                       args.gen_repeats, warmup=0))
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--size", choices=sorted(SIZES), default="moderate", help="model size preset")
    p.add_argument("--latents", type=int, default=None, help="DiT window in latents (default: the preset's)")
    p.add_argument("--audio-latents", type=int, default=None, help="VAE workload length in latents (x2048 samples)")
    p.add_argument("--batch", type=int, default=1, help="batch of the DiT workloads (CFG doubles it)")
    p.add_argument("--steps", type=int, default=10, help="sampler steps of the full generation")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per side (median reported)")
    p.add_argument("--gen-repeats", type=int, default=2, help="timed repetitions of the full generation")
    p.add_argument("--compile", action="store_true", help="torch.compile musicdiff's DiT and VAE (not parity-exact: "
                   "fused kernels round differently; compile time is not timed)")
    p.add_argument("--no-packed-gemm", dest="packed_gemm", action="store_false",
                   help="musicdiff's DiT without MKL packed-weight GEMMs during inference (CPU)")
    p.add_argument("--no-fast-inference", dest="fast_inference", action="store_false",
                   help="musicdiff's plain model files, without musicdiff.models.inference.fast_inference "
                   "(the generate rows: the Generator switches it on itself)")
    p.add_argument("--ceiling", action="store_true", help="profile each workload once and print the kernel "
                   "ceiling: SAT time / time of the GEMM, attention and convolution kernels")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="also time musicdiff's DiT under autocast at this precision (rows *_bf16/*_fp16; "
                   "not equal outputs: their diff column shows by how much)")
    p.add_argument("--t5", default=None, help="local T5 directory (default: a random 768-wide T5)")
    p.add_argument("--only", nargs="*", default=None, help="subset: dit_train dit_infer ae_encode ae_decode generate")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args)
    print(f"\ndevice={args.device} threads={args.threads} size={args.size} latents={args.latents} "
          f"audio_latents={args.audio_latents} batch={args.batch} steps={args.steps} compile={args.compile} "
          f"packed_gemm={args.packed_gemm} fast_inference={args.fast_inference} "
          f"torch={torch.__version__}")
    basis = "CPU time of the process" if args.device == "cpu" else "wall time"
    print(f"median {basis} over {args.repeats} alternating repeats (wall-clock medians in brackets)")
    print(f"{'workload':<18}{'SAT s':>10}{'musicdiff s':>13}{'speed-up':>10}{'max rel diff':>14}{'ceiling':>9}"
          "   wall SAT / musicdiff")
    for r in results:
        ceiling = f"{r['ceiling']:>8.2f}x" if r["ceiling"] else f"{'':>9}"
        print(f"{r['name']:<18}{r['ref_s']:>10.3f}{r['ours_s']:>13.3f}{r['ratio']:>9.2f}x{r['diff']:>14.1e}{ceiling}"
              f"   ({r['ref_wall']:.3f} / {r['ours_wall']:.3f})")
    if args.ceiling:
        print("ceiling: SAT time / time of the GEMM, attention and convolution kernels (for dit_train: of "
              "musicdiff's step, SAT's recomputed forward excluded), i.e. the speed-up of an implementation that "
              "issues the same kernels and spends nothing else")
    return results


if __name__ == "__main__":
    main()
