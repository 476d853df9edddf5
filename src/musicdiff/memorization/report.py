"""HTML listening report of the memorization analysis, in the style of a paper's demo page.

For each of the top-N generations (ranked by nearest-neighbour similarity to the training
set): its prompt, split (in/out-of-distribution), an audio player and a spectrogram, next to
its k closest training items with their similarity, prompt, player and spectrogram; plus a
summary table and the repeated training groups. Media are either embedded (base64 WAV and PNG
data URIs: one self-contained file, good for small reports) or written next to the HTML and
linked by relative paths (for big ones). A small script marks each ``<audio>`` with
``data-ready`` once the browser can play it through (used by the headless-browser test).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

import soundfile as sf
import torch

_EMBED_LIMIT_BYTES = 40_000_000  # auto mode embeds media when the estimated size is below this

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px}
table.summary td{padding:2px 10px;border-bottom:1px solid #ddd}
.row{display:flex;gap:12px;align-items:flex-start;background:#fff;border:1px solid #ddd;border-radius:8px;
 padding:10px;margin:10px 0;overflow-x:auto}
.card{flex:0 0 260px;font-size:12px}
.card.gen{border-right:2px solid #ccc;padding-right:12px}
.card img{width:256px;height:72px;display:block;image-rendering:auto;border-radius:3px}
.card audio{width:256px;height:32px}
.sim{font-weight:bold;font-size:14px}
.high{color:#c0392b}
.badge{display:inline-block;padding:1px 6px;border-radius:8px;font-size:11px;background:#eee;margin-left:4px}
.in_distribution{background:#fde2c8} .out_of_distribution{background:#d5e8fb}
.prompt{color:#444;margin:4px 0;max-height:4.5em;overflow:hidden}
"""

_JS = """
(function(){
  var audios = document.querySelectorAll('audio');
  function update(){
    var ready = document.querySelectorAll('audio[data-ready]').length;
    var errors = document.querySelectorAll('audio[data-error]').length;
    document.body.setAttribute('data-audio-total', audios.length);
    document.body.setAttribute('data-audio-ready', ready);
    document.body.setAttribute('data-audio-errors', errors);
  }
  audios.forEach(function(a){
    function mark(){ if(!a.hasAttribute('data-ready')){ a.setAttribute('data-ready', '1');
      a.setAttribute('data-duration', a.duration.toFixed(3)); update(); } }
    a.addEventListener('canplaythrough', mark);
    a.addEventListener('error', function(){ a.setAttribute('data-error', '1'); update(); });
    if (a.readyState >= 4) mark();
  });
  update();
})();
"""


def wav_bytes(audio: torch.Tensor, sample_rate: int) -> bytes:
    """16-bit PCM WAV file contents of ``[C, T]`` audio (peak-limited to [-1, 1])."""
    buf = io.BytesIO()
    sf.write(buf, audio.detach().float().clamp(-1, 1).cpu().numpy().T, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(audio: torch.Tensor, sample_rate: int, max_frames: int = 384, n_fft: int = 512) -> bytes:
    """A small log-magnitude spectrogram image (PNG bytes, no axes) of the mono mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = audio.detach().float().cpu().mean(0)
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    hop = max(n_fft // 4, x.numel() // max_frames)
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-5))
    db = db.clamp_min(db.max() - 80).numpy()
    buf = io.BytesIO()
    plt.imsave(buf, db[::-1], cmap="magma", format="png")
    return buf.getvalue()


def _duration(item: Any) -> float:
    """Duration of an item in seconds without decoding it."""
    if getattr(item, "audio", None) is not None:
        return item.audio.shape[-1] / float(item.sample_rate)
    try:
        return float(sf.info(str(item.path)).duration)
    except (RuntimeError, TypeError):
        return 0.0


class _Media:
    """Writes or embeds audio/image media and returns the ``src`` to use."""

    def __init__(self, out_dir: Path, embed: bool) -> None:
        self.out_dir, self.embed, self.count = out_dir, embed, 0

    def src(self, data: bytes, kind: str, ext: str) -> str:
        if self.embed:
            return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
        self.count += 1
        rel = Path("media") / f"{self.count:05d}.{ext}"
        (self.out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.out_dir / rel).write_bytes(data)
        return rel.as_posix()


def _card(item: Any, audio: torch.Tensor, sr: int, media: _Media, header: str, extra_class: str = "") -> str:
    split = f'<span class="badge {html.escape(item.split)}">{html.escape(item.split)}</span>' if item.split else ""
    return (f'<div class="card {extra_class}">{header}{split}<div><b>{html.escape(item.name)}</b></div>'
            f'<div class="prompt" title="{html.escape(item.prompt or "")}">{html.escape(item.prompt or "(no prompt)")}</div>'
            f'<audio controls preload="auto" src="{media.src(wav_bytes(audio, sr), "audio/wav", "wav")}"></audio>'
            f'<img alt="spectrogram" src="{media.src(spectrogram_png(audio, sr), "image/png", "png")}"></div>')


def write_report(result: Any, training_items: Sequence[Any], generation_items: Sequence[Any], out_dir: str | Path,
                 top_n: int = 50, embed_media: bool | None = None, sample_rate: int = 24000,
                 max_seconds: float = 30.0, threshold: float | None = None,
                 title: str = "Memorization analysis (SA2 §4.5)") -> Path:
    """Write ``out_dir/index.html`` for a :class:`~musicdiff.memorization.analysis.MemorizationResult`.

    Args:
        result: the analysis result (ranking, repeats, summary).
        training_items: training :class:`AudioItem` list (indices match the ranking).
        generation_items: generation :class:`AudioItem` list.
        out_dir: output directory.
        top_n: generations shown.
        embed_media: True = one self-contained file; False = media files under ``out_dir/media``;
            None = embed when the estimated size is below 40 MB.
        sample_rate: audio rate in the report.
        max_seconds: clips are cut to this length.
        threshold: similarity shown in red at or above this value.
        title: page title.

    Returns:
        Path of the HTML file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = list(result.ranking)[:top_n]
    max_len = int(max_seconds * sample_rate)
    if embed_media is None:
        seconds = sum(min(_duration(generation_items[m.generation]), max_seconds)
                      + sum(min(_duration(training_items[t]), max_seconds) for t in m.neighbours) for m in shown)
        embed_media = seconds * sample_rate * 2 * 2 * 4 / 3 < _EMBED_LIMIT_BYTES  # 16-bit stereo, base64
    media = _Media(out, embed_media)
    cache: dict[tuple[str, int], torch.Tensor] = {}

    def clip(kind: str, i: int) -> torch.Tensor:
        if (kind, i) not in cache:
            item = (training_items if kind == "train" else generation_items)[i]
            cache[(kind, i)] = item.load(sample_rate, 2)[:, :max_len]
        return cache[(kind, i)]

    def sim_html(s: float) -> str:
        cls = "sim high" if threshold is not None and s >= threshold else "sim"
        return f'<span class="{cls}">{s:.4f}</span>'

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Generations ranked by cosine similarity of their embedding to the nearest training item; "
             "each row shows the generation (left) and its closest training items.</p>",
             "<h2>Summary</h2><table class='summary'>"]
    parts += [f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in result.summary.items()]
    parts.append(f"</table><h2>Top {len(shown)} generations by nearest-neighbour similarity</h2>")
    for rank, m in enumerate(shown, 1):
        gen = generation_items[m.generation]
        row = [f'<div class="row" id="rank-{rank}">',
               _card(gen, clip("gen", m.generation), sample_rate, media,
                     f"<div>#{rank} &nbsp; NN sim {sim_html(m.top_similarity)}</div>", "gen")]
        for j, (t, s) in enumerate(zip(m.neighbours, m.similarities), 1):
            group = result.repeats.group_of.get(t)
            badge = f'<span class="badge">repeat group {group}</span>' if group is not None else ""
            row.append(_card(training_items[t], clip("train", t), sample_rate, media,
                             f"<div>train NN {j}: {sim_html(s)}{badge}</div>"))
        row.append("</div>")
        parts.append("".join(row))
    groups = result.repeats.groups
    parts.append(f"<h2>Repeated training items ({len(result.repeats.repeated_items)} items in {len(groups)} groups, "
                 f"threshold {result.repeats.threshold:.3f})</h2><ol>")
    for g in groups[:100]:
        names = ", ".join(html.escape(training_items[i].name) for i in g[:10]) + (" …" if len(g) > 10 else "")
        parts.append(f"<li>{len(g)} items: {names}</li>")
    parts.append(f"</ol><script>{_JS}</script></body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
