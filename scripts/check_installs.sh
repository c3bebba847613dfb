#!/usr/bin/env bash
# The package as users install it, beyond the editable checkout the test suite runs on (.ci/run calls both):
#   scripts/check_installs.sh wheel   # built as a wheel and installed: training's final save, the Hub folder and
#                                     # packaging tests run against the installed files, not the checkout
#   scripts/check_installs.sh floor   # the transformers floor pyproject.toml declares, installed in its own venv
#                                     # (with this machine's torch): the model, processor, pipeline and Hub tests
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1

case "${1:?usage: scripts/check_installs.sh wheel|floor}" in
wheel)
    .venv/bin/python -m pip wheel . --no-deps --no-build-isolation -q -w "$work/dist"
    # an installed wheel is its unpacked files on sys.path; the tests and train.py run from a copy of the tree
    # without the package, so the checkout cannot be what they import (conftest checks UPOCR_INSTALLED_AT)
    .venv/bin/python -m zipfile -e "$work"/dist/upocr_hf-*.whl "$work/site"
    mkdir "$work/tree" && cp -r tests train.py configs "$work/tree/" && ln -s "$repo/../shared" "$work/shared"
    cd "$work/tree"
    UPOCR_INSTALLED_AT="$work/site" PYTHONPATH="$work/site" "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider \
        tests/test_hub.py tests/test_packaging.py tests/test_training.py::test_yaml_configuration_and_initialisations \
        tests/test_training.py::test_a_new_task_trains_from_a_pretrained_folder
    ;;
floor)
    floor=$(sed -nE 's/^ *"transformers>=([0-9.]+).*/\1/p' pyproject.toml)
    [ -n "$floor" ] || { echo "check_installs.sh: no transformers floor found in pyproject.toml" >&2; exit 2; }
    python3 -m venv "$work/venv"
    "$work/venv/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$work/venv/bin/python" -m pip install -q ".[test]" "transformers==$floor"
    "$work/venv/bin/python" -c "import transformers; assert transformers.__version__ == '$floor', transformers.__version__"
    # from a copy of the tree, like the wheel check, so the installed package is the one tested
    mkdir "$work/tree" && cp -r tests train.py configs "$work/tree/" && ln -s "$repo/../shared" "$work/shared"
    cd "$work/tree"
    UPOCR_INSTALLED_AT="$work/venv/lib" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
        tests/test_modeling.py tests/test_image_processing.py tests/test_pipeline.py tests/test_hub.py
    ;;
*)
    echo "usage: scripts/check_installs.sh wheel|floor" >&2
    exit 2
    ;;
esac
