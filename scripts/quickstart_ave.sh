#!/usr/bin/env bash
# The AVE (segment-level) quickstart: generated AVE-style clips -> features -> tiny LoCo-AVEL -> segment accuracy
# on held-out clips -> merged events for one clip. A few minutes on 2 CPU cores.
# Usage: scripts/quickstart_ave.sh [OUT_DIR] (default: quickstart_ave/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-quickstart_ave}
AVDET=.venv/bin/avdet
export AVDET_CACHE="$OUT/cache"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step $AVDET make-sample "$OUT/data" --ave --videos 60 --seed 0
step $AVDET extract "$OUT/data/videos" --cache "$OUT/cache" --workers 2
step $AVDET train --config tiny_ave --run-dir "$OUT/run" --overwrite \
    --set data.annotations="$OUT/data" --set data.classes="$OUT/data/classes.tsv" --set data.cache="$OUT/cache"
step $AVDET eval --checkpoint "$OUT/run/best.ckpt" --split test --json "$OUT/test_accuracy.json" \
    --confusion "$OUT/confusion.png"

# the test clip with the longest event
CLIP=$(awk -F'&' '{print $5 - $4, $2}' "$OUT/data/testSet.txt" | sort -k1,1nr -s | head -n 1 | cut -d' ' -f2)
step $AVDET detect "$OUT/data/videos/$CLIP.mp4" --checkpoint "$OUT/run/best.ckpt" \
    --out "$OUT/events.json" --plot "$OUT/timeline.png"
printf '\nDone: %s/test_accuracy.json, %s/confusion.png, %s/events.json, %s/timeline.png\n' "$OUT" "$OUT" "$OUT" "$OUT"
