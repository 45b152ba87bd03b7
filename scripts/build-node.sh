#!/usr/bin/env bash
# Build (or reuse) what the real-node test tier needs on top of scripts/build-k8s.sh:
#   * Debian packages: containerd 1.6, runc, containernetworking-plugins (CNI
#     bridge/host-local/portmap/loopback), iptables, debootstrap, buildah
#     (installed with apt-get when missing and we are root; otherwise the
#     command to run is printed and we fail)
#   * coredns and local-path-provisioner (the dynamic provisioner kind ships),
#     built from the Go module proxy into
#     ${MNIST_SERVING_CACHE:-~/.cache/mnist-serving}/node-<versions>/bin
#   * the container images (tests/harness/node/images.py: pause, the operator from our
#     Dockerfile, the NGC stand-ins, coredns, the provisioner), cached by content
#
# Usage: scripts/build-node.sh [--print-bin] [--no-images]
set -euo pipefail

COREDNS_VERSION=v1.15.0
LOCAL_PATH_VERSION=v0.0.30
DEB_PACKAGES=(containerd runc containernetworking-plugins iptables debootstrap buildah)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MNIST_SERVING_CACHE:-$HOME/.cache/mnist-serving}
BIN=$CACHE/node-coredns-$COREDNS_VERSION-local-path-$LOCAL_PATH_VERSION/bin
PY=${PY:-$ROOT/.venv/bin/python}

IMAGES=1
for arg in "$@"; do
  case $arg in
    --print-bin) echo "$BIN"; exit 0 ;;
    --no-images) IMAGES=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-node.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[build-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- Debian packages
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "build-node.sh: missing Debian packages: ${missing[*]}; install them with:" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- Go binaries
command -v go >/dev/null || { echo "build-node.sh: go not found on PATH (Go >= 1.26 needed)" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
if [[ -x $BIN/coredns && -x $BIN/local-path-provisioner ]]; then
  log "reusing $BIN (coredns $COREDNS_VERSION, local-path-provisioner $LOCAL_PATH_VERSION)"
else
  mkdir -p "$BIN"
  start=$(date +%s)
  log "coredns $COREDNS_VERSION (about 3 min on 2 cores)"
  GOBIN=$BIN go install -p 2 -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  log "local-path-provisioner $LOCAL_PATH_VERSION"
  GOBIN=$BIN go install -p 2 -trimpath -ldflags "-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
  log "Go binaries built in $(( $(date +%s) - start ))s"
fi

# ---------------------------------------------------------------- images
if ((IMAGES)); then
  (cd "$ROOT" && "$PY" -m tests.harness.node.images build --binaries-dir "$BIN")
fi
