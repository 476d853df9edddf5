"""The Gradio page: generate, audio-to-audio, inpaint/continue, gallery and a blind A/B test.

Every generation tab has the same controls (prompt, negative prompt, duration limited to the
model window, sampler, steps, CFG scale, seed or random, batch, file format, adapter scales) and
shows each clip as a spectrogram, a waveform player and a download of the WAV/FLAC written with
the CLI's metadata. Requests run one at a time on the one loaded model (the queue is set up by
:func:`musicdiff.app.server.serve`); a request the model cannot serve raises :class:`gradio.Error`,
shown in the page, and the app keeps running.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from musicdiff.app.gallery import RunStore, StoreError, describe
from musicdiff.app.jobs import RequestError, Result, Settings, Studio
from musicdiff.app.listening_test import Clip, ListeningLog, Trial, make_trial


def _error(exc: BaseException) -> gr.Error:
    """The page's error toast (kept until closed), with the one-line message of ``exc``."""
    return gr.Error(str(exc), duration=None)


class _Controls:
    """The generation controls of one tab (elem ids ``<tab>-<name>``)."""

    def __init__(self, studio: Studio, tab: str) -> None:
        steps, cfg = studio.sampler_defaults(None)
        self.prompt = gr.Textbox(label="prompt", lines=2, placeholder="e.g. sine playing C4, 120 bpm",
                                 elem_id=f"{tab}-prompt")
        self.negative = gr.Textbox(label="negative prompt", lines=1, elem_id=f"{tab}-negative")
        with gr.Row():
            self.duration = gr.Number(value=round(studio.max_duration, 3), elem_id=f"{tab}-duration",
                                      label=f"duration (s, at most {studio.max_duration:.2f}: the model window)")
            self.sampler = gr.Dropdown(studio.sampler_options(), value=studio.default_sampler, label="sampler",
                                       elem_id=f"{tab}-sampler")
            self.steps = gr.Number(value=steps, precision=0, label="steps", elem_id=f"{tab}-steps")
            self.cfg = gr.Number(value=cfg, label="CFG scale", elem_id=f"{tab}-cfg")
        with gr.Row():
            self.seed = gr.Number(value=0, precision=0, label="seed (batch items: seed, seed+1, ...)",
                                  elem_id=f"{tab}-seed")
            self.random = gr.Checkbox(value=True, label="random seed", elem_id=f"{tab}-random")
            self.batch = gr.Slider(1, studio.max_batch, value=1, step=1, label="batch", elem_id=f"{tab}-batch")
            self.fmt = gr.Radio(["wav", "flac"], value="wav", label="file format", elem_id=f"{tab}-format")
        self.adapters: dict[str, gr.Slider] = {}
        if studio.adapters:
            with gr.Row():
                for name, scale in studio.adapters.items():
                    self.adapters[name] = gr.Slider(-2.0, 2.0, value=scale, step=0.05, label=f"adapter {name} scale",
                                                    elem_id=f"{tab}-adapter-{name}")
        else:
            gr.Markdown("No adapters loaded (start the app with `adapters=[lora.safetensors:0.8]` to pick their "
                        "scales here).")
        self.sampler.change(lambda name: [gr.Number(value=v) for v in studio.sampler_defaults(name)],
                            self.sampler, [self.steps, self.cfg])

    def components(self) -> list[gr.components.Component]:
        return [self.prompt, self.negative, self.duration, self.sampler, self.steps, self.cfg, self.seed,
                self.random, self.batch, self.fmt, *self.adapters.values()]

    def settings(self, data: dict) -> Settings:
        def number(comp: gr.components.Component, what: str) -> float | None:
            value = data[comp]
            if value is None or value == "":
                raise RequestError(f"{what} is empty")
            return value

        return Settings(
            prompt=data[self.prompt] or "", negative_prompt=data[self.negative] or "",
            duration=number(self.duration, "duration"), sampler=data[self.sampler],
            steps=int(number(self.steps, "steps")), cfg_scale=float(number(self.cfg, "CFG scale")),
            seed=None if data[self.random] else int(number(self.seed, "seed")), batch=int(data[self.batch]),
            fmt=data[self.fmt], adapter_scales={n: float(data[c]) for n, c in self.adapters.items()})


class _Results:
    """``max_batch`` result slots: spectrogram, player, download; plus a status line."""

    def __init__(self, studio: Studio, tab: str) -> None:
        self.status = gr.Markdown(elem_id=f"{tab}-status")
        self.slots: list[tuple[gr.Column, gr.Image, gr.Audio, gr.File]] = []
        with gr.Row():
            for i in range(studio.max_batch):
                with gr.Column(visible=False, min_width=320) as col:
                    image = gr.Image(label=f"spectrogram {i + 1}", type="filepath", interactive=False,
                                     elem_id=f"{tab}-spectrogram-{i}")
                    audio = gr.Audio(label=f"clip {i + 1}", type="filepath", interactive=False,
                                     elem_id=f"{tab}-audio-{i}")
                    file = gr.File(label=f"download clip {i + 1}", interactive=False, elem_id=f"{tab}-file-{i}")
                self.slots.append((col, image, audio, file))

    def components(self) -> list[gr.components.Component]:
        return [self.status] + [c for slot in self.slots for c in slot]

    def values(self, results: list[Result], studio: Studio) -> list[Any]:
        seeds = ", ".join(str(r.seed) for r in results)
        folder = results[0].path.parent if results else studio.out_dir
        out: list[Any] = [f"{len(results)} clip(s) of {results[0].duration:.2f} s, seeds {seeds}; written to "
                          f"`{folder}` (tags and `generations.jsonl` as musicdiff-generate)" if results else ""]
        for i, _ in enumerate(self.slots):
            r = results[i] if i < len(results) else None
            out += [gr.Column(visible=r is not None), str(r.spectrogram) if r else None,
                    str(r.path) if r else None, str(r.path) if r else None]
        return out


def _generation_tab(studio: Studio, tab: str, job: Callable[..., list[Result]],
                    extra: list[gr.components.Component], button: str) -> None:
    controls = _Controls(studio, tab)
    run = gr.Button(button, variant="primary", elem_id=f"{tab}-run")
    results = _Results(studio, tab)

    def handler(data: dict, progress=gr.Progress()) -> list[Any]:  # noqa: B008 - Gradio's progress idiom
        try:
            s = controls.settings(data)
            found = job(s, *[data[c] for c in extra],
                        progress=lambda i, n: progress((i, n), desc="sampling", unit="steps"))
        except (ValueError, OSError) as exc:  # RequestError, and the model's own checks (adapters, shapes)
            raise _error(exc) from None
        return results.values(found, studio)

    run.click(handler, set(controls.components() + extra), results.components(), concurrency_id="model")


def _run_choices(store: RunStore) -> tuple[str, list[list[str]], list[tuple[str, str]]]:
    """Status line, table rows and dropdown choices of the store's runs (a missing store is a status line)."""
    try:
        runs = store.runs()
    except StoreError as exc:
        return str(exc), [], []
    rows = [[r.name, r.entry_point, r.status, r.started, r.parent, r.run_id] for r in runs]
    return f"{len(runs)} run(s) in `{store.tracking_uri}`", rows, [(r.label, r.run_id) for r in runs]


def _gallery_tab(store: RunStore) -> tuple[gr.Button, gr.Markdown, gr.Dataframe, list[gr.Dropdown]]:
    status = gr.Markdown(elem_id="gallery-status")
    refresh = gr.Button("Refresh runs", elem_id="gallery-refresh")
    table = gr.Dataframe(headers=["name", "entry point", "status", "started", "parent", "run id"],
                         interactive=False, elem_id="gallery-runs", wrap=True)
    sides = []
    with gr.Row():
        for side in ("a", "b"):
            with gr.Column():
                run = gr.Dropdown([], label=f"run {side.upper()}", elem_id=f"gallery-run-{side}")
                clip = gr.Dropdown([], label="clip", elem_id=f"gallery-clip-{side}")
                player = gr.Audio(label=f"run {side.upper()}", type="filepath", interactive=False,
                                  elem_id=f"gallery-audio-{side}")
                info = gr.Markdown(elem_id=f"gallery-info-{side}")
            sides.append((run, clip, player, info))

    def show(run_id: str | None, other_id: str | None) -> list[Any]:
        if not run_id:
            return [gr.Dropdown(choices=[], value=None), None, ""]
        try:
            run, clips = store.run(run_id), store.audio(run_id)
            other = [store.run(other_id)] if other_id else []
        except StoreError as exc:
            raise _error(exc) from None
        first = str(clips[0]) if clips else None
        text = describe(run, [run, *other]) + ("" if clips else "\n\n(no audio artifacts in this run)")
        return [gr.Dropdown(choices=[(c.name, str(c)) for c in clips], value=first), first, text]

    for (run, clip, player, info), (other, *_rest) in zip(sides, reversed(sides)):
        run.change(show, [run, other], [clip, player, info])
        clip.change(lambda path: path, clip, player)
    return refresh, status, table, [run for run, *_ in sides]


def _anonymous_copy(path: str, store: RunStore) -> str:
    """A copy of a clip under a random name (its served URL and download name must not reveal the run)."""
    dest = store.cache_dir / "blind" / f"{uuid.uuid4().hex}{Path(path).suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return str(dest)


def _listening_tab(store: RunStore, votes: ListeningLog) -> tuple[gr.Dropdown, gr.Dropdown]:
    gr.Markdown("Blind A/B test: pick two runs, listen to clip 1 and clip 2 (order shuffled, runs hidden) and "
                f"vote. Votes are appended to `{votes.path}`.")
    with gr.Row():
        run_a = gr.Dropdown([], label="run A", elem_id="ab-run-a")
        run_b = gr.Dropdown([], label="run B", elem_id="ab-run-b")
        listener = gr.Textbox(label="listener", placeholder="your name or initials", elem_id="ab-listener")
    new = gr.Button("New pair", elem_id="ab-new")
    trial = gr.State(None)
    with gr.Row():
        clip1 = gr.Audio(label="clip 1", type="filepath", interactive=False, elem_id="ab-clip-1")
        clip2 = gr.Audio(label="clip 2", type="filepath", interactive=False, elem_id="ab-clip-2")
    with gr.Row():
        votes_buttons = {c: gr.Button(label, elem_id=f"ab-vote-{c}") for c, label in
                         (("1", "Clip 1 is better"), ("none", "No preference"), ("2", "Clip 2 is better"))}
    result = gr.Markdown(elem_id="ab-result")

    def clips(run_id: str) -> list[Clip]:
        run = store.run(run_id)
        return [Clip(run.run_id, run.name, str(p)) for p in store.audio(run_id)]

    def new_pair(a: str | None, b: str | None) -> list[Any]:
        if not a or not b:
            raise _error(ValueError("pick run A and run B first"))
        try:
            t = make_trial(clips(a), clips(b), random.Random())
        except (ValueError, StoreError) as exc:
            raise _error(exc) from None
        return [t, _anonymous_copy(t.first.path, store), _anonymous_copy(t.second.path, store),
                "Which clip do you prefer?"]

    def vote(choice: str, t: Trial | None, who: str) -> list[Any]:
        if t is None:
            raise _error(ValueError("press 'New pair' first"))
        try:
            votes.record(t, choice, who or "")
        except OSError as exc:
            raise _error(exc) from None
        tally = votes.tally(t.first.run_id, t.second.run_id)
        return [None, None, None, f"Recorded. Clip 1 was **{t.first.run_name}** ({t.first.name}), clip 2 was "
                f"**{t.second.run_name}** ({t.second.name}). Votes so far between these runs: {t.first.run_name} "
                f"{tally[t.first.run_id]}, {t.second.run_name} {tally[t.second.run_id]}, no preference "
                f"{tally['none']}. Press 'New pair' for the next one."]

    new.click(new_pair, [run_a, run_b], [trial, clip1, clip2, result])
    for choice, button in votes_buttons.items():
        button.click(lambda t, who, c=choice: vote(c, t, who), [trial, listener], [trial, clip1, clip2, result])
    return run_a, run_b


def build_ui(studio: Studio, store: RunStore, votes: ListeningLog, title: str = "musicdiff") -> gr.Blocks:
    """The app's page.

    Args:
        studio: the loaded model and its jobs.
        store: the MLflow store browsed by the gallery.
        votes: the JSONL file of the blind A/B test.
        title: browser tab title; the header names the model source.

    Returns:
        The :class:`gradio.Blocks` (queue and launch it with :func:`musicdiff.app.server.serve`).
    """
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as demo:  # served copies: 1 day
        gr.Markdown(f"## musicdiff\nModel `{studio.cfg.get('checkpoint') or 'random weights'}` · window "
                    f"{studio.max_duration:.2f} s · {studio.sample_rate} Hz · adapters: "
                    f"{', '.join(studio.adapters) or 'none'} · clips go to `{studio.out_dir}`")
        with gr.Tab("Generate", id="generate"):
            _generation_tab(studio, "generate", studio.text_to_music, [], "Generate")
        with gr.Tab("Audio to audio", id="a2a"):
            upload = gr.Audio(label="init audio", type="filepath", sources=["upload"], elem_id="a2a-upload")
            level = gr.Number(value=1.0, label="init noise level (sigma; flow samplers: time in (0, 1])",
                              elem_id="a2a-level")
            _generation_tab(studio, "a2a", studio.audio_to_audio, [upload, level], "Transform")
        with gr.Tab("Inpaint / continue", id="inpaint"):
            upload = gr.Audio(label="audio to keep", type="filepath", sources=["upload"], elem_id="inpaint-upload")
            keep = gr.Textbox(label="kept regions of the upload in seconds; the rest, up to the duration, is "
                                    "regenerated (keep all of a short upload to continue it)",
                              value=f"0-{round(studio.max_duration / 2, 2):g}", placeholder="0-1.5, 3-4",
                              elem_id="inpaint-keep")
            _generation_tab(studio, "inpaint", studio.inpaint, [upload, keep], "Inpaint / continue")
        with gr.Tab("Gallery", id="gallery"):
            refresh, status, table, gallery_runs = _gallery_tab(store)
        with gr.Tab("Blind A/B test", id="ab"):
            ab_runs = _listening_tab(store, votes)

        def list_runs() -> list[Any]:
            text, rows, choices = _run_choices(store)
            return [text, rows] + [gr.Dropdown(choices=choices, value=None) for _ in range(4)]

        outputs = [status, table, *gallery_runs, *ab_runs]
        refresh.click(list_runs, None, outputs)
        demo.load(list_runs, None, outputs)
    return demo
