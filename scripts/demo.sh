#!/usr/bin/env bash
# The main job on a fresh machine (after scripts/setup.sh): convert the authors' reference checkpoint fixture
# into a Hugging Face model folder, render a few synthetic photos with text, and run all three tasks on them
# with the `upocr` command. The reference fixture has random weights (it exists to check the architecture
# number for number), so the outputs show the plumbing, not a trained model's quality.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
shared="${UPOCR_SHARED:-../shared}"
.venv/bin/python -m upocr_hf.convert_original_checkpoint \
    --checkpoint "$shared/reference/upocr_small_original_state_dict.safetensors" --output runs/upocr-small-reference
.venv/bin/python -m upocr_hf.data.synthetic --num 3 --size 512 --out runs/demo-data --seed 0 --split test
images=runs/demo-data/SCUT-EnsText/test/image
.venv/bin/upocr remove "$images" -o runs/demo-output/removal --model runs/upocr-small-reference
.venv/bin/upocr segment "$images" -o runs/demo-output/segmentation --model runs/upocr-small-reference
.venv/bin/upocr detect-tampering "$images" -o runs/demo-output/tampering --model runs/upocr-small-reference
echo "results in runs/demo-output/{removal,segmentation,tampering}"
