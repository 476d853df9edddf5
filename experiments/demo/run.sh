#!/usr/bin/env bash
# The tiny pipeline end to end on CPU: train the autoencoder → pre-encode the dataset → train the
# DiT on the latents → generate → evaluate. Every stage is an MLflow run in outputs/mlflow.db.
# Run through `make demo` (which sets up .venv), or directly with the venv on PATH.
set -euo pipefail
# Sleeping (not spinning) OpenMP workers: spinning threads slow small CPU models down 10x+ whenever
# another process shares the cores.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
OUT=${DEMO_DIR:-outputs/demo}
STEPS_AE=${STEPS_AE:-400}
STEPS_DIT=${STEPS_DIT:-800}
# The demo's vocabulary: square/saw notes on four roots, so that a few CPU minutes of training give
# audible, checkable pitch control (tests/cli/test_pipeline_learns_pitch.py asserts it). Drop these
# overrides for the full synthetic set (sine/pluck/drums, chords, seven roots), which needs longer runs.
DATA=("dataset.instruments=[square,saw]" "dataset.notes=[C4,E4,G4,B4]" "dataset.chord_prob=0.0")
rm -rf "$OUT"
echo "== 1/5 train the tiny autoencoder ($STEPS_AE steps)"
# Synthetic tones tolerate the tiny VAE's old fast recipe (lr 2e-3, no warm-up or guards), which the demo's numbers
# come from; real music needs experiment=tiny_autoencoder as it is (experiments/real_music/README.md).
SYNTH_AE=(task.optimizer_generator.lr=2e-3 task.lr_warmup_steps=0 task.latent_limit=null task.divergence=null
          task.adversarial_ramp_steps=0)
musicdiff-train experiment=tiny_autoencoder "${DATA[@]}" "${SYNTH_AE[@]}" trainer.max_steps="$STEPS_AE" \
    hydra.run.dir="$OUT/autoencoder"
echo "== 2/5 pre-encode the synthetic dataset into latent shards"
musicdiff-encode autoencoder_from="$OUT/autoencoder/export" "${DATA[@]}" hydra.run.dir="$OUT/latents"
echo "== 3/5 train the tiny DiT on the latents ($STEPS_DIT steps)"
musicdiff-train experiment=tiny dataset=latents dataset.root="$OUT/latents/latents" dataset.window_seconds=1.0 \
    autoencoder_from="$OUT/autoencoder/export" trainer.max_steps="$STEPS_DIT" hydra.run.dir="$OUT/dit"
echo "== 4/5 generate"
musicdiff-generate checkpoint="$OUT/dit/export" prompts_file=experiments/demo/prompts.txt sampler=dpmpp_2m \
    sampler.steps=25 sampler.cfg_scale=6 duration=1.0 spectrograms=true hydra.run.dir="$OUT/generate"
echo "== 5/5 evaluate the generations against the training audio"
musicdiff-evaluate metrics=musicnn generated_dir="$OUT/generate/audio" reference_dir="$(ls -d outputs/data/synthetic/*square-saw_C4-E4-G4-B4*/ | head -n 1)" \
    hydra.run.dir="$OUT/evaluate"
echo
echo "Done. Audio: $OUT/generate/audio   Metrics: $OUT/evaluate/metrics.json"
echo "Browse every run: mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db"
