#!/usr/bin/env bash
# Guidance × steps × sampler sweep on the tiny demo model (see README.md).
set -euo pipefail
CKPT=${CKPT:-outputs/demo/dit/export}
REF=${REF:-$(ls -d outputs/data/synthetic/*square-saw_C4-E4-G4-B4*/ outputs/data/synthetic/*/ 2>/dev/null | head -n 1)}
N_TRIALS=${N_TRIALS:-12}
musicdiff-sweep checkpoint="$CKPT" study_name=guidance_steps n_trials="$N_TRIALS" \
    "eval_overrides=['reference_dir=$REF']" hydra.run.dir=outputs/sweeps/guidance_steps/$(date +%Y%m%d-%H%M%S)
