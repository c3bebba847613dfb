#!/usr/bin/env bash
# Which training crop size gets the most out of the CPU? Each size trains from the shipped weights for the same CPU
# time, as a segment of scripts/train_default_model.sh (same recipe, data, seed and held-out evaluation), and is
# packaged into its own folder through the packaging gate; the table puts their held-out figures side by side.
#
#   scripts/training_config_study.sh SECONDS SIZE... [-- extra train.py flags]
#   e.g. scripts/training_config_study.sh 1200 256 384 512 -- --learning_rate 3e-4 --mixed_precision bf16
#
# A size's steps are SECONDS over its seconds per step, measured first by bench/bench_train.py (the shipped model's
# compact architecture, 4 images per task, bf16 when asked); the real wall times are in the table. Its in-training
# validation runs once, at the end; its warm-up is 25 steps (the 512 px size gets about 120 steps in 20 minutes).
# Under UPOCR_WORK (default runs/default-model): runs study-SECONDS-SIZE, their evaluations eval/study-SECONDS-SIZE,
# candidate folders candidates/study-SECONDS-SIZE (the gate refuses one that does not beat the shipped model), the
# starting model's figures study-SECONDS-start.json and the table study-SECONDS.md. A size whose evaluation is
# complete is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/training_config_study.sh SECONDS SIZE... [-- train.py flags]"
seconds="${1:?$usage}"
shift
sizes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    [[ "$1" =~ ^[0-9]+$ ]] || { echo "training_config_study.sh: SIZE must be a number of pixels, got '$1' ($usage)" >&2; exit 2; }
    sizes+=("$1") && shift
done
[ $# -gt 0 ] && shift
[ ${#sizes[@]} -gt 0 ] || { echo "training_config_study.sh: no SIZE given ($usage)" >&2; exit 2; }
work="${UPOCR_WORK:-runs/default-model}"
PY=.venv/bin/python
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # as the segment script trains
mode=eager && [[ " $* " =~ \ --mixed[_-]precision[=\ ]bf16\  ]] && mode=bf16
start="$work/study-$seconds-start.json"  # the figures of the model every size starts from, kept for the table
[ -f "$start" ] || cp upocr_hf/default_model/eval_results.json "$start"

evaluated() {  # NAME: the segment script wrote all four of its held-out evaluations
    [ "$(ls "$work/eval/$1/new"/*.json 2>/dev/null | wc -l)" -ge 4 ]
}

rows=()
for size in "${sizes[@]}"; do
    name="study-$seconds-$size"
    if ! evaluated "$name"; then
        per_step=$($PY bench/bench_train.py --configs compact --size "$size" --batch-size-per-task 4 \
            --modes "$mode" --steps 2 | tail -1 | $PY -c 'import json, sys; print(json.load(sys.stdin)["seconds_per_step"])')
        steps=$($PY -c "print(max(1, round($seconds / $per_step)))")
        command=(scripts/train_default_model.sh "$name" "$steps" --image_size "$size" --warmup_steps 25
            --eval_steps 1000000 --seed "$(printf 'study-%s' "$seconds" | cksum | cut -d' ' -f1)" "$@")
        echo "== $name: $per_step s/step -> $steps steps: ${command[*]}"
        # the gate refusing a size that does not beat the shipped model is a result, not a failure
        UPOCR_DEFAULT_MODEL_OUT="$work/candidates/$name" "${command[@]}" || true
        if ! evaluated "$name"; then
            echo "training_config_study.sh: $name stopped before its evaluation was complete ($work/$name/train.log)" >&2
            exit 1
        fi
    fi
    rows+=("$size=$work/$name")
done
$PY scripts/default_model_report.py study --runs "${rows[@]}" --evaluations-root "$work/eval" --start "$start" \
    --out "$work/study-$seconds.md"
cat "$work/study-$seconds.md"
