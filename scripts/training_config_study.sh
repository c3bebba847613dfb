#!/usr/bin/env bash
# Which training resolution gets the most out of the CPU? Each configuration trains from the shipped weights for the
# same CPU time, as a segment of scripts/train_default_model.sh (same recipe, data and held-out evaluation), and is
# packaged into its own folder through the packaging gate; the table puts their held-out figures side by side.
#
#   scripts/training_config_study.sh SECONDS SIZE... [-- extra train.py flags]
#   e.g. scripts/training_config_study.sh 1200 256 384 512 -- --learning_rate 3e-4 --mixed_precision bf16
#
# A configuration's steps are SECONDS over its seconds per step, measured first by bench/bench_train.py (the shipped
# model's compact architecture, 4 images per task, bf16 when asked). Its in-training validation runs once, at the
# end; its warm-up is 25 steps (the 512 px configuration gets about 100 steps in 20 minutes). Runs, evaluations and
# candidate folders live under UPOCR_WORK (default runs/default-model): study-SECONDS-SIZE, candidates/...;
# the table goes to study-SECONDS.md. A configuration whose candidate folder exists is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:?usage: scripts/training_config_study.sh SECONDS SIZE... [-- train.py flags]}"
shift
sizes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sizes+=("$1") && shift; done
[ $# -gt 0 ] && shift
work="${UPOCR_WORK:-runs/default-model}"
PY=.venv/bin/python
mode=eager && [[ " $* " == *" --mixed_precision bf16 "* ]] && mode=bf16

rows=()
for size in "${sizes[@]}"; do
    name="study-$seconds-$size" candidate="$work/candidates/study-$seconds-$size"
    if [ ! -d "$candidate" ]; then
        per_step=$($PY bench/bench_train.py --configs compact --size "$size" --batch-size-per-task 4 \
            --modes "$mode" --steps 2 | tail -1 | $PY -c 'import json, sys; print(json.load(sys.stdin)["seconds_per_step"])')
        steps=$($PY -c "print(max(1, round($seconds / $per_step)))")
        echo "== $name: $per_step s/step -> $steps steps"
        # the gate may refuse a configuration that does not beat the shipped model: the study goes on
        UPOCR_DEFAULT_MODEL_OUT="$candidate" scripts/train_default_model.sh "$name" "$steps" --image_size "$size" \
            --warmup_steps 25 --eval_steps 1000000 "$@" || echo "== $name: not packaged (see its log)"
    fi
    rows+=("$size=$work/$name")
done
$PY scripts/default_model_report.py study --runs "${rows[@]}" --evaluations-root "$work/eval" \
    --start upocr_hf/default_model/eval_results.json \
    --out "$work/study-$seconds.md"
cat "$work/study-$seconds.md"
