#!/usr/bin/env bash
# Score a model on the users'-photos validation split (upocr_hf.data.synthetic --look photos --style held-out:
# 512 px, text 20-120 px, fonts, photographs and a forgery method training never saw), with the readable-words
# figure on both removal protocols and, with --anchors, the cv2.inpaint anchors (the model's own mask, the true one)
# and the trivial baselines (in OUT_DIR/anchors, apart from the model's own records); tampering also under the
# folder's region rule where it has one.
# Usage: scripts/evaluate_photos.sh MODEL_DIR DATA_DIR OUT_DIR [--anchors]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/evaluate_photos.sh MODEL_DIR DATA_DIR OUT_DIR [--anchors]}" data="${2:?}" out="${3:?}"
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
evaluation=($PY -m upocr_hf.evaluation --split test --batch-size 8 --no-progress)
removal=(--task text-removal --data "$data/SCUT-EnsText" --readable-words)
mkdir -p "$out"
"${evaluation[@]}" --model "$model" "${removal[@]}" --keep-background --output-json "$out/text-removal-keep-background.json"
"${evaluation[@]}" --model "$model" "${removal[@]}" --output-json "$out/text-removal.json"
"${evaluation[@]}" --model "$model" --task text-segmentation --data "$data/TextSeg" --output-json "$out/text-segmentation.json"
"${evaluation[@]}" --model "$model" --task tampered-text-detection --data "$data/Tampered-IC13" \
    --output-json "$out/tampered-text-detection.json"
# where the folder has a tampered-region rule (scripts/choose_tamper_rule.py), the figures the demo quotes: under it
if $PY -c "import sys; from upocr_hf import UpocrImageProcessor as P; sys.exit(P.for_model(sys.argv[1]).tamper_region_rule is None)" "$model"; then
    "${evaluation[@]}" --model "$model" --task tampered-text-detection --data "$data/Tampered-IC13" --region-rule \
        --output-json "$out/tampered-text-detection-region-rule.json"
fi
if [ "${4:-}" = "--anchors" ]; then
    mkdir -p "$out/anchors"
    "${evaluation[@]}" --anchor own-mask --model "$model" "${removal[@]}" --output-json "$out/anchors/own-mask.json"
    "${evaluation[@]}" --anchor true-mask "${removal[@]}" --output-json "$out/anchors/true-mask.json"
    for pair in text-removal=SCUT-EnsText text-segmentation=TextSeg tampered-text-detection=Tampered-IC13; do
        "${evaluation[@]}" --baseline --task "${pair%%=*}" --data "$data/${pair#*=}" \
            --output-json "$out/anchors/baseline-${pair%%=*}.json"
    done
fi
