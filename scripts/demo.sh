#!/usr/bin/env bash
# The main job (after scripts/setup.sh): serve the Gradio app of space/ offline on http://127.0.0.1:7860
# (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it; UPOCR_MODEL picks a model folder or Hub id).
# It serves the default model shipped in the package (upocr_hf/default_model) when this checkout has one; until
# then it converts the authors' reference fixture (a small UPOCR with random weights, kept to check the
# architecture number for number) and serves that: the interface works end to end, the outputs are noise.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" GRADIO_ANALYTICS_ENABLED=False
export GRADIO_SERVER_NAME="${GRADIO_SERVER_NAME:-127.0.0.1}" GRADIO_SERVER_PORT="${GRADIO_SERVER_PORT:-7860}"
if [ -z "${UPOCR_MODEL:-}" ] && [ ! -f upocr_hf/default_model/config.json ]; then
    reference="${UPOCR_SHARED:-../shared}/reference/upocr_small_original_state_dict.safetensors"
    echo "No trained default model is shipped yet: serving the reference fixture's random-weight model."
    [ -f runs/upocr-small-reference/config.json ] || .venv/bin/python -m upocr_hf.convert_original_checkpoint \
        --checkpoint "$reference" --output runs/upocr-small-reference
    export UPOCR_MODEL=runs/upocr-small-reference
fi
echo "UPOCR demo on http://$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (Ctrl+C to stop)"
exec .venv/bin/python space/app.py
