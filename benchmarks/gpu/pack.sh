#!/usr/bin/env bash
# Build what the lent GPU machine lacks (no network there) as three xz parts
# under .device/ (git-ignored) for the device tool to carry, 64 MiB a call:
#   1-serve:   nvidia-pytriton (tritonserver, python backend, the 3.12 stub only),
#              perf_analyzer 2.45 with its two libraries, tritonclient and its grpc/http stack
#   2-ma-np:   numpy 1.26.4 (the pytriton stub needs numpy 1) and model-analyzer
#              1.58 with what it imports (no llvmlite)
#   3-llvmlite: llvmlite (numba's, 173 MB unpacked; model-analyzer imports numba.cuda)
# Wheels are for CPython 3.12 manylinux (the machine's Python), cached under
# $MNIST_SERVING_CACHE/device keyed by these pins.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${MNIST_SERVING_CACHE:-$HOME/.cache/mnist-serving}/device-py312-pytriton0.7.0-pa2.45.0-ma1.58.0
OUT=$ROOT/.device
PLATFORMS=(manylinux_2_39_x86_64 manylinux_2_38_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64
           manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64)
PIP=(pip install -q --no-deps --only-binary=:all: --python-version 3.12)
for p in "${PLATFORMS[@]}"; do PIP+=(--platform "$p"); done

SERVE=(nvidia-pytriton==0.7.0 tritonclient==2.73.0 grpcio==1.85.3
       protobuf==6.33.6 gevent==26.9.0 geventhttpclient==2.6.1 greenlet==3.3.2 zope.event==6.2
       zope.interface==8.7 brotli==1.2.1 python-rapidjson==1.25 urllib3==2.8.0
       certifi==2026.10.19.post1 mlxtend==0.25.0)
NUMPY=(numpy==1.26.4)
# model-analyzer's imports when it profiles (python -X importtime), less what the
# machine has (packaging, pyyaml, jinja2's markupsafe, typing_extensions)
ANALYZER=(triton-model-analyzer==1.58.0 numba==0.68.1 llvmlite==0.50.0 matplotlib==3.11.2
          contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1 pillow==13.0.0
          pyparsing==3.3.3 python-dateutil==4.0.0 ml-dtypes==0.5.4 optuna==3.6.1
          colorlog==6.12.0 tqdm==4.70.1 docker==7.2.0 requests==2.34.2 idna==3.20
          charset-normalizer==3.5.3 pdfkit==1.0.0 prometheus-client==0.26.0 psutil==7.2.2
          importlib-metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0)

if [ ! -f "$CACHE/.done" ]; then
  rm -rf "$CACHE" && mkdir -p "$CACHE"
  "${PIP[@]}" --target "$CACHE/serve" "${SERVE[@]}"
  "${PIP[@]}" --target "$CACHE/numpy" "${NUMPY[@]}"
  "${PIP[@]}" --target "$CACHE/analyzer" "${ANALYZER[@]}"
  stubs=$CACHE/serve/pytriton/tritonserver/python_backend_stubs
  find "$stubs" -mindepth 1 -maxdepth 1 ! -name 3.12 -exec rm -rf {} +   # other Pythons' stubs
  rm -f "$CACHE"/serve/nvidia_pytriton.libs/libpython3-*.so*   # 3.13's; the 3.12 stub uses the machine's
  find "$CACHE" \( -name __pycache__ -o -path "*/tests" \) -prune -exec rm -rf {} +
  touch "$CACHE/.done"
fi
# perf_analyzer 2.45, the build the local tiers run. 2.60 (the perf-analyzer wheel) writes
# each request's input and output tensors into --profile-export-file as JSON numbers (794
# per MNIST request), and on that machine its exports came back empty with exit 0. The
# binary comes from the tritonclient 2.45 wheel; it loads libb64 (Debian) and libcudart.so.12
# (nvidia-cuda-runtime-cu12), which scripts/setup.sh puts beside it: its folder is copied whole.
PA=$CACHE/serve/perf_analyzer_2.45
if [ ! -x "$PA/bin/perf_analyzer" ]; then
  [ -e "$ROOT/.venv/opt/perf_analyzer/lib/libcudart.so.12" ] \
    || { echo "pack: run scripts/setup.sh first (it unpacks perf_analyzer 2.45 into .venv/opt)" >&2; exit 1; }
  cp -rL "$ROOT/.venv/opt/perf_analyzer" "$PA"
  rm -f "$OUT/1-serve.tar.xz"
fi
mkdir -p "$OUT"
[ -f "$OUT/1-serve.tar.xz" ] || (cd "$CACHE" && tar -cf - serve | xz -6 -T1 > "$OUT/1-serve.tar.xz")
[ -f "$OUT/2-ma-np.tar.xz" ] || (cd "$CACHE" && tar -cf - numpy \
  $(cd analyzer && ls -d * | grep -v '^llvmlite' | sed 's|^|analyzer/|') | xz -6 -T1 > "$OUT/2-ma-np.tar.xz")
[ -f "$OUT/3-llvmlite.tar.xz" ] || (cd "$CACHE" && tar -cf - analyzer/llvmlite analyzer/llvmlite-* \
  | xz -6 -T1 > "$OUT/3-llvmlite.tar.xz")
ls -la "$OUT"
