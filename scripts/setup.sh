#!/usr/bin/env bash
# Creates (or updates) the project's one virtual environment in $VENV and
# installs every tool the local run and the tests use. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
CACHE=${MNIST_SERVING_CACHE:-$HOME/.cache/mnist-serving}
PA_VERSION=2.45.0   # last tritonclient wheel that ships perf_analyzer for glibc < 2.38

step() { printf '==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV"
fi
[ -x "$VENV/bin/uv" ] || "$VENV/bin/pip" install -q uv
step "installing mnist-serving with the local and test extras (torch is large: first run takes minutes)"
UV_CACHE_DIR="$CACHE/uv" "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -e '.[local,test]'

# perf_analyzer: the binary inside the tritonclient 2.45 manylinux wheel runs
# on glibc 2.36 (the perf-analyzer wheel needs 2.38+). It needs libb64 from
# Debian and libcudart.so.12 (from the nvidia-cuda-runtime-cu12 wheel), even
# on a machine with no GPU. We copy both beside it; no root needed.
PA_DIR="$VENV/opt/perf_analyzer"
if [ ! -x "$PA_DIR/bin/perf_analyzer" ] || [ ! -e "$PA_DIR/lib/libcudart.so.12" ]; then
  step "unpacking perf_analyzer $PA_VERSION"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$PA_DIR/bin" "$PA_DIR/lib" "$CACHE/wheels"
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" \
    --platform manylinux1_x86_64 "tritonclient==$PA_VERSION"
  "$VENV/bin/python" -m zipfile -e "$CACHE/wheels/tritonclient-$PA_VERSION-py3-none-manylinux1_x86_64.whl" "$tmp/tc"
  install -m 0755 "$tmp/tc/tritonclient-$PA_VERSION.data/data/bin/perf_analyzer" "$PA_DIR/bin/perf_analyzer.bin"
  (cd "$tmp" && { apt-get download libb64-0d >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get download libb64-0d >/dev/null; }; }) \
    || { echo "setup: error: cannot fetch Debian package libb64-0d for perf_analyzer" >&2; exit 1; }
  dpkg -x "$tmp"/libb64-0d_*.deb "$tmp/b64"
  cp -a "$tmp"/b64/usr/lib/x86_64-linux-gnu/libb64.so.0d* "$PA_DIR/lib/"
  cudart=$("$VENV/bin/python" -c 'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], "lib"))' 2>/dev/null || true)
  [ -e "$cudart/libcudart.so.12" ] || { echo "setup: error: libcudart.so.12 not found (nvidia-cuda-runtime-cu12)" >&2; exit 1; }
  cp -L "$cudart/libcudart.so.12" "$PA_DIR/lib/"
  # relative to itself, so benchmarks/gpu/pack.sh carries this folder as it is
  cat > "$PA_DIR/bin/perf_analyzer" <<'WRAP'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
export LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/perf_analyzer.bin" "$@"
WRAP
  chmod +x "$PA_DIR/bin/perf_analyzer"
  ln -sf "../opt/perf_analyzer/bin/perf_analyzer" "$VENV/bin/perf_analyzer"
fi
"$VENV/bin/perf_analyzer" --version >/dev/null 2>&1 || "$VENV/bin/perf_analyzer" --help 2>&1 | head -1 | grep -q . \
  || { echo "setup: error: perf_analyzer does not start" >&2; exit 1; }
step "ready: $VENV (perf_analyzer $PA_VERSION, tritonserver from nvidia-pytriton)"
