#!/usr/bin/env bash
# One-step set-up of a virtual environment in .venv for this repository.
#   bash scripts/setup.sh          # the library and the demo app (extra [demo])
#   bash scripts/setup.sh --test   # plus test tools (pytest, ruff, gradio_client, playwright, chromium)
# The torch/torchvision pins below are for the 2-core CPU machines this project is developed and
# tested on (those wheels lie on the local disk there); the package metadata itself keeps open ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
    $PIP install -q "torch==2.14.1" "torchvision==0.29.1"
fi
if [ "$want_test" = 1 ]; then
    $PIP install -q -e ".[test]"
    # Headless browser for tests/test_browser.py: Debian's chromium package, driven by Playwright through
    # executable_path (Playwright's own browser downloads are never used). Skipped when already installed.
    if [ ! -x /usr/bin/chromium ]; then
        if command -v apt-get >/dev/null 2>&1; then
            SUDO=""
            [ "$(id -u)" = 0 ] || SUDO="sudo"
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "setup.sh: apt-get not found; install Chromium at /usr/bin/chromium to run the browser tests" >&2
        fi
    fi
else
    $PIP install -q -e ".[demo]"
fi
.venv/bin/python -c "import upocr_hf" >/dev/null
