#!/usr/bin/env bash
# The quickstart: generated clips -> features -> tiny LoCo (best.ckpt calibrated on validation) -> mAP on held-out
# clips (and an HTML report of the split) -> events for one clip at the calibrated operating point, its timeline
# and an interactive HTML report beside the truth -> that operating point's precision / recall / F1 over the test
# split.
# Runs in a few minutes on 2 CPU cores. Usage: scripts/quickstart.sh [OUT_DIR] (default: quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-quickstart}
AVDET=.venv/bin/avdet
export AVDET_CACHE="$OUT/cache"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step $AVDET make-sample "$OUT/data" --videos 60 --seed 0
step $AVDET extract "$OUT/data/videos" --cache "$OUT/cache" --workers 2
step $AVDET train --config tiny --run-dir "$OUT/run" --overwrite \
    --set data.annotations="$OUT/data/annotations.json" --set data.classes="$OUT/data/classes.tsv" \
    --set data.cache="$OUT/cache"
step $AVDET eval --checkpoint "$OUT/run/best.ckpt" --split test --json "$OUT/test_map.json" --report "$OUT/report"

CLIP=$(.venv/bin/python -c "import json,sys; db=json.load(open(sys.argv[1]))['database']; \
print(sorted(v for v, d in db.items() if d['subset'] == 'test')[0])" "$OUT/data/annotations.json")
step $AVDET detect "$OUT/data/videos/$CLIP.mp4" --checkpoint "$OUT/run/best.ckpt" \
    --out "$OUT/events.json" --plot "$OUT/timeline.png"
step $AVDET detect "$OUT/data/videos/$CLIP.mp4" --checkpoint "$OUT/run/best.ckpt" --out "$OUT/events.srt"
step $AVDET plot "$OUT/events.json" --annotations "$OUT/data/annotations.json" --out "$OUT/timeline_vs_truth.png"
step $AVDET report "$OUT/events.json" --video "$OUT/data/videos/$CLIP.mp4" --annotations "$OUT/data/annotations.json" \
    --checkpoint "$OUT/run/best.ckpt" --out "$OUT/report.html"
step .venv/bin/python benchmarks/operating_point.py --checkpoint "$OUT/run/best.ckpt" --videos "$OUT/data/videos" \
    --json "$OUT/operating_point.json"
printf '\nDone: %s/events.json, %s/events.srt, %s/timeline_vs_truth.png, %s/report.html (open it in a browser),\n' \
    "$OUT" "$OUT" "$OUT" "$OUT"
printf '%s/report/index.html (the test split, a page per video)\n' "$OUT"
