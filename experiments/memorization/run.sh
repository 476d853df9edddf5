#!/usr/bin/env bash
# Memorization study (SA2 §4.5) on the tiny demo model: does it reproduce its training clips?
# Needs the demo outputs first (`make demo`, i.e. experiments/demo/run.sh -> outputs/demo/...).
# Every run is an MLflow run (entry point `memorization`) in outputs/mlflow.db.
set -euo pipefail
DEMO=${DEMO_DIR:-outputs/demo}
OUT=${OUT_DIR:-$DEMO/memorization}
STEPS=${STEPS:-30}
THRESHOLD=${REPEAT_THRESHOLD:-0.99}  # randconv: same-caption training pairs score 0.99+
MEMO=(python -m musicdiff.memorize)  # = musicdiff-memorization
command -v musicdiff-memorization >/dev/null && MEMO=(musicdiff-memorization)
for need in "$DEMO/dit/export" "$DEMO/latents/latents/index.json" "$DEMO/generate/audio"; do
    [ -e "$need" ] || { echo "missing $need: run experiments/demo/run.sh (make demo) first" >&2; exit 1; }
done
# The training set = the source audio of the latent shards the demo DiT was trained on.
TRAIN=(dataset=latents dataset.root="$DEMO/latents/latents" repeat_threshold="$THRESHOLD")

echo "== 1/3 generate from the demo DiT (in-distribution: training captions; out-of-distribution: ood_prompts.txt)"
"${MEMO[@]}" checkpoint="$DEMO/dit/export" "${TRAIN[@]}" ood_prompts_file=experiments/memorization/ood_prompts.txt \
    sampler=dpmpp_2m sampler.steps="$STEPS" sampler.cfg_scale=3 duration=1.0 hydra.run.dir="$OUT/generated"

echo "== 2/3 the demo's own generations (experiments/demo/prompts.txt); reuses the cached training embeddings"
"${MEMO[@]}" generated_dir="$DEMO/generate/audio" "${TRAIN[@]}" hydra.run.dir="$OUT/demo_generations"

echo "== 3/3 control: 4 training clips copied verbatim must rank first at similarity 1.0"
CONTROL="$OUT/control_copies"
rm -rf "$CONTROL" && mkdir -p "$CONTROL"
python - "$DEMO/latents/latents" "$CONTROL" <<'PY'
import json, shutil, sys
from pathlib import Path
from musicdiff.data.latent_writer import read_index
index = read_index(sys.argv[1])
shard = Path(sys.argv[1]) / f"{index['shards'][0]['name']}.jsonl"
recs = [json.loads(line) for line in shard.read_text().splitlines()]
with open(Path(sys.argv[2]) / "generations.jsonl", "w") as fh:
    for rec in recs[:4]:
        name = "copy_" + Path(rec["path"]).name
        shutil.copy(Path(index["root"]) / rec["path"], Path(sys.argv[2]) / name)
        fh.write(json.dumps({"path": name, "prompt": rec["metadata"].get("caption"), "split": "in_distribution"}) + "\n")
PY
"${MEMO[@]}" generated_dir="$CONTROL" "${TRAIN[@]}" hydra.run.dir="$OUT/control"

echo
echo "Reports: $OUT/{generated,demo_generations,control}/report/index.html (open in a browser)"
echo "Summaries: $OUT/*/summary.json   MLflow: mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db"
