#!/usr/bin/env bash
# The main job (after scripts/setup.sh): serve the Gradio app of space/ offline on http://127.0.0.1:7860 with the
# default model shipped in the package (upocr_hf/default_model: a small UPOCR trained on synthetic data only).
# GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change the address; UPOCR_MODEL picks another model folder or Hub id.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" GRADIO_ANALYTICS_ENABLED=False
export GRADIO_SERVER_NAME="${GRADIO_SERVER_NAME:-127.0.0.1}" GRADIO_SERVER_PORT="${GRADIO_SERVER_PORT:-7860}"
echo "UPOCR demo on http://$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (Ctrl+C to stop)"
exec .venv/bin/python space/app.py
