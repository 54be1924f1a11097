#!/usr/bin/env bash
# One-command setup for a fresh machine: creates ./.venv and installs
# lipsync-jax with its test tools, onnx + onnxruntime (ONNX export and
# infer.py --backend onnxruntime), mkdocs-material (the docs site: `mkdocs
# build --strict`), the web pages' packages (aiortc, gradio, playwright) and
# the CPU build of PyTorch (used only for .pth checkpoint import and the
# PyTorch comparisons). As root with apt, it also installs Debian's Chromium,
# the browser of the web pages' tests (about 20 s the first time; skipped
# when it is there, or without root or apt: those tests then skip).
#
#   bash setup.sh                      # Python from $PYTHON or python3
#   TORCH_SPEC=none bash setup.sh      # skip PyTorch
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VENV="${VENV:-.venv}"

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# pip byte-compiles every installed file on one core (about 30 s of the
# install); --no-compile, then compileall on every core below, does the same
# work in half the time. The .pyc files matter: with PYTHONDONTWRITEBYTECODE
# set, as on our CI machines, nothing would ever cache them.
if [ "$TORCH_SPEC" = "none" ]; then
  "$VENV/bin/python" -m pip install -q --no-compile -e ".[dev,onnx,docs,web]"
else
  "$VENV/bin/python" -m pip install -q --no-compile "$TORCH_SPEC" -e ".[dev,onnx,docs,web,torch]"
fi
# MediaPipe's wheel carries the BlazeFace face-detector weights (.tflite) that
# our default detector runs under ai-edge-litert. We never import mediapipe, and
# its own requirements pin an old numpy, so it is installed without them.
"$VENV/bin/python" -m pip install -q --no-compile --no-deps mediapipe==0.10.21
# Debian's Chromium for the web pages' browser tests (tests/test_web.py);
# Playwright drives it at /usr/bin/chromium (`playwright install` cannot
# download a browser here).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
      > /dev/null; } \
    || echo "setup.sh: could not install chromium; the browser tests will skip" >&2
fi
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true  # a few files in wheels are not Python 3; pip skips them too
"$VENV/bin/python" -c "import lipsync_jax, jax; print('lipsync-jax', lipsync_jax.__version__, 'on jax', jax.__version__, jax.devices())"
