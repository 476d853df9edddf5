"""musicdiff-app in real headless Chromium: generate, queue, errors, gallery, blind A/B votes.

One server (``python -m musicdiff.app`` on a free 127.0.0.1 port, a tiny random-weight export, an
MLflow store with two runs) serves every test of this module and is always terminated at the end.
Skipped only when Chromium / chromedriver are missing (``make browser`` installs them; CI runs it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="chromium + chromedriver not installed (make browser)")

STARTUP_S = 300  # server start: imports, loading the export
JOB_S = 120  # one generation request in the page
RUN_NAMES = ("sweep_trial_a", "sweep_trial_b")
GALLERY_SECONDS = 0.75


def wait_for(fn, timeout: float, what: str, poll: float = 0.25):
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - element not there yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_export(root: Path) -> Path:
    from hydra.utils import instantiate

    from musicdiff.pretrained import write_export
    from tests.conftest import compose_root

    cfg = compose_root("train", ["experiment=tiny", f"paths.output_dir={root / 'train'}",
                                 f"paths.log_dir={root / 'outputs'}"])
    torch.manual_seed(0)
    modules = {g: instantiate(cfg[g]).eval() for g in ("autoencoder", "dit", "conditioner")}
    return write_export(root / "export", modules, config=cfg)


def _mlflow_runs(store: Path) -> dict[str, str]:
    """Two finished runs with a metric, a differing param and one logged clip each; name -> run id."""
    from musicdiff.tracking.mlflow_logger import MLflowLogger

    ids = {}
    for k, name in enumerate(RUN_NAMES):
        logger = MLflowLogger(store_dir=str(store))
        logger.start(store / name, {"sampler.cfg_scale": 3.0 + 4 * k, "checkpoint": "export"},
                     tags={"mlflow.runName": name, "musicdiff.entry_point": "generate"})
        t = torch.arange(int(GALLERY_SECONDS * 16000)) / 16000
        logger.log_audio("generate/00000", (0.3 * torch.sin(2 * math.pi * (220 + 110 * k) * t)).expand(2, -1), 16000, 0)
        logger.log_metrics({"fd_mel": 1.5 + k}, 0)
        ids[name] = logger.run_id
        logger.finish("FINISHED")
    return ids


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The running app: url, log dir, run ids; the server process group is killed afterwards."""
    root = tmp_path_factory.mktemp("app")
    export = _tiny_export(root)
    outputs = root / "outputs"
    port = _free_port()
    log_path = root / "server.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(root / "gradio"),
               HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "musicdiff.app", f"checkpoint={export}", f"paths.log_dir={outputs}",
           f"hydra.run.dir={root / 'run'}", f"server_port={port}", "sampler.steps=8"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=Path(__file__).resolve().parents[2])
    url = f"http://127.0.0.1:{port}/"

    def up():
        if proc.poll() is not None:
            pytest.fail(f"musicdiff-app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200

    try:
        run_ids = _mlflow_runs(outputs)  # while the server starts; the page reads the store when it loads
        wait_for(up, STARTUP_S, f"the app at {url}", poll=1.0)
        yield {"url": url, "outputs": outputs, "runs": run_ids, "root": root, "log": log_path}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chrome-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-proxy-server", f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # no network but the app
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# ----------------------------------------------------------------------------- page helpers
def _open(d, url: str) -> None:
    from selenium.webdriver.common.by import By

    d.get(url)
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#generate-prompt textarea"), 60, "the page")


def _retry(fn, what: str):
    """Run a DOM action until it stops hitting elements Gradio re-rendered meanwhile (stale references)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt():
        try:
            fn()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(attempt, 20, what)


def _type(d, css: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def act():
        el = d.find_element(By.CSS_SELECTOR, css)
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(Keys.DELETE)
        el.send_keys(text)

    _retry(act, f"typing into {css}")


def _fill(d, tab: str, prompt: str, duration: str, steps: str) -> None:
    _type(d, f"#{tab}-prompt textarea", prompt)
    _type(d, f"#{tab}-duration input", duration)
    _type(d, f"#{tab}-steps input", steps)


def _click(d, elem_id: str) -> None:
    from selenium.webdriver.common.by import By

    def act():
        el = d.find_element(By.ID, elem_id)
        d.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        el.click()

    _retry(act, f"clicking #{elem_id}")


def _tab(d, label: str) -> None:
    from selenium.webdriver.common.by import By

    _retry(lambda: d.find_element(By.XPATH, f"//button[@role='tab' and contains(., '{label}')]").click(),
           f"the {label} tab")


_PLAYER_DURATION = """
const out = [];
for (const el of document.querySelectorAll(arguments[0] + ' *')) {
  if (el.shadowRoot) for (const a of el.shadowRoot.querySelectorAll('audio')) out.push(a.duration);
}
return out.filter(x => x > 0)[0] || null;"""


def _status_text(d) -> str:
    return d.execute_script("return [...document.querySelectorAll('[data-testid=status-tracker]')]"
                            ".map(e => e.textContent.trim()).filter(t => t).join(' | ')")


def _text(d, css: str) -> str:
    return d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)


def _toasts(d) -> str:
    return d.execute_script("return [...document.querySelectorAll('[data-testid=toast-body]')]"
                            ".map(e => e.textContent.trim()).join(' | ')")


def _pick(d, elem_id: str, label: str) -> None:
    """Choose ``label`` in a Gradio dropdown."""
    from selenium.webdriver.common.by import By

    def act():
        if not d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li[role=option]"):
            box = d.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
            d.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
            box.click()
        [o for o in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li[role=option]") if label in o.text][0].click()
        return True

    wait_for(act, 20, f"option {label!r} in #{elem_id}")


# ------------------------------------------------------------------------------------ tests
def test_generate_shows_spectrogram_and_player_with_duration_and_queues(app, browser):
    d = browser
    _open(d, app["url"])
    _fill(d, "generate", "sine playing C4", "0.5", "200")
    first = d.current_window_handle
    d.switch_to.new_window("tab")
    second = d.current_window_handle
    _open(d, app["url"])
    _fill(d, "generate", "saw playing G4", "0.25", "100")
    d.switch_to.window(first)
    d.execute_script("document.getElementById('generate-run').click()")
    d.switch_to.window(second)
    d.execute_script("document.getElementById('generate-run').click()")  # while the first samples: it queues
    wait_for(lambda: "queue" in _status_text(d), 30, "the second request's queue position", poll=0.05)
    wait_for(lambda: "/100 steps" in _status_text(d), JOB_S, "its sampling progress bar (n/100 steps)", poll=0.05)
    d.switch_to.window(first)
    duration = wait_for(lambda: d.execute_script(_PLAYER_DURATION, "#generate-audio-0"), JOB_S, "the clip's player")
    assert duration == pytest.approx(0.5, abs=0.01)
    assert wait_for(lambda: d.execute_script("const i = document.querySelector('#generate-spectrogram-0 img');"
                                             "return i && i.complete && i.naturalWidth"), 30, "the spectrogram") > 100
    assert "seeds" in _text(d, "#generate-status")
    # the download carries the CLI's metadata
    href = d.execute_script("return document.querySelector('#generate-audio-0 a[download]').href")
    dest = app["root"] / "download.wav"
    with urllib.request.urlopen(href, timeout=30) as r:
        dest.write_bytes(r.read())
    with sf.SoundFile(dest) as fh:
        assert fh.title == "sine playing C4" and fh.software.startswith("musicdiff")
        meta = json.loads(fh.comment)
        assert fh.frames == 8000 and meta["duration"] == 0.5 and isinstance(meta["seed"], int)
    records = [json.loads(line) for line in (app["outputs"] / "app" / "audio" / "generations.jsonl").open()]
    assert {r["prompt"] for r in records} >= {"sine playing C4"} and all(r["mode"] == "text" for r in records)

    d.switch_to.window(second)  # the queued request ran after the first
    assert wait_for(lambda: d.execute_script(_PLAYER_DURATION, "#generate-audio-0"), JOB_S,
                    "the queued request's clip") == pytest.approx(0.25, abs=0.01)
    d.close()
    d.switch_to.window(first)


def test_impossible_duration_and_bad_upload_show_errors_and_app_keeps_running(app, browser):
    d = browser
    _open(d, app["url"])
    _fill(d, "generate", "sine playing C4", "5", "4")
    _click(d, "generate-run")
    text = wait_for(lambda: _toasts(d), 30, "the duration error")
    assert "duration 5 s is impossible" in text and "at most 1.00 s" in text

    bad = app["root"] / "not_audio.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00this is not a wav file" * 10)
    _tab(d, "Audio to audio")
    from selenium.webdriver.common.by import By

    _retry(lambda: d.find_element(By.CSS_SELECTOR, "#a2a-upload input[type=file]").send_keys(str(bad)), "the upload")
    _fill(d, "a2a", "square playing E4", "0.5", "4")
    time.sleep(1.0)  # let the upload finish
    _click(d, "a2a-run")
    wait_for(lambda: "not_audio.wav' cannot be used" in _toasts(d), 30, "the bad-upload error")

    _tab(d, "Generate")  # the server survived both: a valid request still generates
    _type(d, "#generate-duration input", "0.3")
    _click(d, "generate-run")
    duration = wait_for(lambda: d.execute_script(_PLAYER_DURATION, "#generate-audio-0"), JOB_S, "a clip after errors")
    assert duration == pytest.approx(0.3, abs=0.01)


def test_gallery_lists_runs_plays_audio_and_records_blind_votes(app, browser):
    d = browser
    _open(d, app["url"])
    _tab(d, "Gallery")
    wait_for(lambda: all(n in _text(d, "#gallery-runs") for n in RUN_NAMES), 30,
             f"both runs in the gallery table (status: {_text(d, '#gallery-status')!r})")
    _pick(d, "gallery-run-a", RUN_NAMES[0])
    _pick(d, "gallery-run-b", RUN_NAMES[1])
    duration = wait_for(lambda: d.execute_script(_PLAYER_DURATION, "#gallery-audio-a"), 60, "run A's clip")
    assert duration == pytest.approx(GALLERY_SECONDS, abs=0.01)
    assert wait_for(lambda: d.execute_script(_PLAYER_DURATION, "#gallery-audio-b"), 60, "run B's clip")
    info = wait_for(lambda: "sampler.cfg_scale" in _text(d, "#gallery-info-b") and _text(d, "#gallery-info-b"), 30,
                    "run B's metrics and params")
    assert "fd_mel" in info and "2.5" in info  # its metric, and the param that differs from run A

    _tab(d, "Blind A/B test")
    _pick(d, "ab-run-a", RUN_NAMES[0])
    _pick(d, "ab-run-b", RUN_NAMES[1])
    _type(d, "#ab-listener textarea, #ab-listener input", "tester")
    _click(d, "ab-new")
    wait_for(lambda: d.execute_script(_PLAYER_DURATION, "#ab-clip-1") and
             d.execute_script(_PLAYER_DURATION, "#ab-clip-2"), 60, "both blind clips")
    assert RUN_NAMES[0] not in _text(d, "#ab-result")  # blind until the vote
    served = d.execute_script("return [...document.querySelectorAll('#ab-clip-1 a[download], #ab-clip-2 a[download]')]"
                              ".map(a => a.href + ' ' + a.download).join(' ')")
    assert served and not any(run_id in served for run_id in app["runs"].values())
    _click(d, "ab-vote-1")
    result = wait_for(lambda: "Recorded" in _text(d, "#ab-result") and _text(d, "#ab-result"), 30,
                      "the vote's confirmation")
    votes = [json.loads(line) for line in (app["outputs"] / "app" / "listening_test.jsonl").open()]
    assert len(votes) == 1 and votes[0]["listener"] == "tester" and votes[0]["choice"] == "1"
    assert votes[0]["preferred_run"] == votes[0]["clip_1"]["run_id"]
    assert {votes[0]["clip_1"]["run_id"], votes[0]["clip_2"]["run_id"]} == set(app["runs"].values())
    assert all(name in result for name in RUN_NAMES)  # revealed after the vote, with the tally
