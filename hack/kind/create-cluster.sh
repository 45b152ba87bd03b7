#!/usr/bin/env bash
# Create a GPU-enabled kind cluster, install the NVIDIA GPU Operator, build and
# load the operator image, install the mnist-serving chart, apply the sample
# MnistServing and wait until it is Ready. Re-running reuses a cluster that
# passes the GPU checks, and deploys the operator as built now.
#
# Never run end to end by this project (no GPU, no Docker engine in its CI):
# tests/chart/test_kind_script.py drives every function here with fake tools.
#
# Needs: Linux, one NVIDIA GPU with driver 575 or later (the NGC 26.04 images
# are CUDA 13.2.1; its release notes also allow data-center GPUs on R470 >= 470.57,
# R525 >= 525.85, R535 >= 535.86, R545 >= 545.23), Docker with the NVIDIA Container Toolkit,
# MIN_FREE_GB free in Docker's data root, and on PATH: kind v0.31.0, nvkind at
# commit NVKIND_COMMIT (built with Go 1.24 or newer), kubectl, helm. The host
# set-up (once; the first three lines as nvkind's README documents them, the
# sysctl as NVIDIA's nvkind CI sets it, persisted to survive a reboot):
#   sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled
#   sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place
#   sudo systemctl restart docker
#   printf 'fs.inotify.max_user_watches = 524288\nfs.inotify.max_user_instances = 8192\n' \
#     | sudo tee /etc/sysctl.d/99-kind-inotify.conf && sudo sysctl --system
#   go install sigs.k8s.io/kind@v0.31.0
#   go install github.com/NVIDIA/nvkind/cmd/nvkind@24c190e165d43a2f20589cb779a4db5b2af0313f
#
# Settings (environment):
#   CLUSTER_NAME          kind cluster name                  (mnist-serving)
#   KIND_NODE_IMAGE       kind node image, by digest         (kindest/node:v1.35.1@sha256:05d7...)
#   GPU_OPERATOR_VERSION  nvidia/gpu-operator chart version  (v26.3.1)
#   GPU_OPERATOR_ARGS     extra `helm upgrade` args for the GPU Operator
#   IMG                   operator image to build            (mnist-serving-operator:dev); each
#                         build is deployed as IMG's tag plus "-" and 12 hex digits of its image ID
#   SAMPLE                MnistServing to apply              (manifests/samples/mnistserving.yaml)
#   SAMPLE_NAMESPACE      namespace of the sample            (default)
#   SAMPLE_TIMEOUT        seconds to wait for Ready          (3600: NGC images are ~10 GB each)
#   MIN_FREE_GB           free GB needed in Docker's data root (80; 0 skips the check)
#   SKIP_SAMPLE=1         stop after installing the chart
set -euo pipefail
# A failure inside $(...) fails the assignment too (split_image's die in build_ref).
shopt -s inherit_errexit

SCRIPT=hack/kind/create-cluster.sh
# What the walkthrough pins: the kind release and node image NVIDIA's nvkind CI
# runs (the digest is the one kind's repository records for v1.35.1), and the
# nvkind commit (nvkind has no releases; main of 2026-06-09, which passes
# --config-source=file to nvidia-ctk inside the node).
KIND_VERSION_PIN=v0.31.0
NVKIND_COMMIT=24c190e165d43a2f20589cb779a4db5b2af0313f
DEFAULT_NODE_IMAGE=kindest/node:v1.35.1@sha256:05d7bcdefbda08b4e038f644c4df690cdac3fba8b06f8289f30e10026720a1ab
# The NGC release of the default images and what its release notes require:
# CUDA 13.2.1, driver 575+, or these data-center branches (minimum minor).
NGC_RELEASE=26.04
NGC_CUDA=13.2.1
MIN_DRIVER_MAJOR=575
declare -A DATACENTER_DRIVER_MIN=([470]=57 [525]=85 [535]=86 [545]=23)
# kind's known-issues values; below them pods fail with "too many open files".
MIN_INOTIFY_WATCHES=524288
MIN_INOTIFY_INSTANCES=512
# The image reference pattern of the CRD and of the chart's values.schema.json
# (operator/mnist_operator/api/spec.py IMAGE_PATTERN, with \s as [:space:]):
# [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_RE='^([a-z0-9][a-z0-9.-]*(:[0-9]+)?/)?[a-z0-9][^[:space:]@:]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$'

CLUSTER_NAME=${CLUSTER_NAME:-mnist-serving}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-$DEFAULT_NODE_IMAGE}
GPU_OPERATOR_VERSION=${GPU_OPERATOR_VERSION:-v26.3.1}
GPU_OPERATOR_ARGS=${GPU_OPERATOR_ARGS:-}
IMG=${IMG:-mnist-serving-operator:dev}
SAMPLE=${SAMPLE:-manifests/samples/mnistserving.yaml}
SAMPLE_NAMESPACE=${SAMPLE_NAMESPACE:-default}
SAMPLE_TIMEOUT=${SAMPLE_TIMEOUT:-3600}
MIN_FREE_GB=${MIN_FREE_GB:-80}
OPERATOR_NAMESPACE=mnist-serving-system
CONTEXT="kind-${CLUSTER_NAME}"
# The per-build reference that is loaded and deployed (set by build_operator_image).
DEPLOY_IMG=""

step() { printf '\n==> %s\n' "$*"; }
warn() { printf 'create-cluster: warning: %s\n' "$*" >&2; }
die() { printf 'create-cluster: error: %s\n' "$*" >&2; exit 1; }
die_recreate() {
  die "$1; delete the cluster and re-run: kind delete cluster --name $CLUSTER_NAME && $SCRIPT"
}
kc() { kubectl --context "$CONTEXT" "$@"; }

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local what=$1 timeout=$2 start=$SECONDS
  shift 2
  until "$@"; do
    (( SECONDS - start < timeout )) || die "timed out after ${timeout}s waiting for ${what}"
    sleep 5
  done
}

# ------------------------------------------------------------------ image references

# valid_image REF: the CRD's and the chart's image pattern.
valid_image() { [[ ${#1} -le 512 && $1 =~ $IMAGE_RE ]]; }

# split_image REF: print "REPOSITORY TAG". The tag is what follows the last ":"
# after the last "/", so a registry port (localhost:5001/op) is not a tag;
# no tag means latest. A digest reference cannot be built, so it is refused.
split_image() {
  local ref=$1
  [[ $ref != *@* ]] || die "IMG=$ref: a digest cannot be built; give repository[:tag]"
  valid_image "$ref" || die "IMG=$ref is not an image reference ([registry[:port]/]path[:tag])"
  local last=${ref##*/}
  if [[ $last == *:* ]]; then
    printf '%s %s\n' "${ref%:*}" "${ref##*:}"
  else
    printf '%s %s\n' "$ref" latest
  fi
}

# build_ref REF IMAGE_ID: REF with "-<12 hex of IMAGE_ID>" added to its tag, so
# every different build gets a tag of its own and `helm upgrade` rolls it out.
build_ref() {
  local ref=$1 id=$2 parts repo tag hex
  parts=$(split_image "$ref") || exit 1
  repo=${parts% *} tag=${parts##* }
  hex=${id#sha256:}
  [[ $hex =~ ^[a-f0-9]{12} ]] || die "docker gave no image ID for $ref (got '$id')"
  tag="${tag}-${hex:0:12}"
  (( ${#tag} <= 128 )) || die "IMG=$ref: its tag plus the build suffix is longer than 128 characters"
  printf '%s:%s\n' "$repo" "$tag"
}

# ------------------------------------------------------------------ preflight

check_tools() {
  local tool
  for tool in docker kind nvkind kubectl helm nvidia-smi; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH (see the header of $SCRIPT)"
  done
}

check_pins() {
  local version
  version=$(kind version 2>/dev/null || true)
  [[ $version == "kind $KIND_VERSION_PIN" || $version == "kind $KIND_VERSION_PIN "* ]] \
    || warn "kind is '${version:-unknown}', not $KIND_VERSION_PIN (the version NVIDIA's nvkind CI runs with this node image): go install sigs.k8s.io/kind@$KIND_VERSION_PIN"
  if command -v go >/dev/null; then
    go version -m "$(command -v nvkind)" 2>/dev/null | grep -q "${NVKIND_COMMIT:0:12}" \
      || warn "nvkind is not built from the pinned commit ${NVKIND_COMMIT:0:12}: go install github.com/NVIDIA/nvkind/cmd/nvkind@$NVKIND_COMMIT"
  fi
}

# check_driver: the host driver can run the NGC release's CUDA (checked before any pull).
check_driver() {
  local out version major minor min
  out=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader) \
    || die "nvidia-smi failed: no working NVIDIA driver on this host"
  version=$(head -n 1 <<<"$out" | tr -d '[:space:]')
  [[ $version =~ ^([0-9]+)\.([0-9]+) ]] || die "cannot read the driver version from nvidia-smi (got '$version')"
  major=${BASH_REMATCH[1]}
  minor=$((10#${BASH_REMATCH[2]}))
  (( major >= MIN_DRIVER_MAJOR )) && return 0
  min=${DATACENTER_DRIVER_MIN[$major]:-}
  if [[ -n $min ]] && (( minor >= min )); then
    warn "NVIDIA driver $version is older than $MIN_DRIVER_MAJOR: the NGC $NGC_RELEASE images (CUDA $NGC_CUDA) run on it only on a data-center GPU (CUDA forward compatibility); on any other GPU upgrade the driver to $MIN_DRIVER_MAJOR or later"
    return 0
  fi
  die "NVIDIA driver $version is too old for the NGC $NGC_RELEASE images (CUDA $NGC_CUDA): they need driver $MIN_DRIVER_MAJOR or later (data-center GPUs: also R470 >= 470.57, R525 >= 525.85, R535 >= 535.86, R545 >= 545.23)"
}

check_docker_runtime() {
  docker info --format '{{.DefaultRuntime}}' | grep -qx nvidia \
    || die "docker's default runtime is not nvidia; run: sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled && sudo systemctl restart docker"
}

# check_disk: kind nodes keep their images in Docker's data root, and kind turns
# off the kubelet's image GC and disk eviction, so a full disk only shows as
# failing pulls.
check_disk() {
  (( MIN_FREE_GB > 0 )) || return 0
  local root avail_kb free_gb
  root=$(docker info --format '{{.DockerRootDir}}') || die "docker info failed"
  avail_kb=$(df -Pk "$root" | awk 'NR == 2 { print $4 }') || die "df failed on Docker's data root $root"
  [[ $avail_kb =~ ^[0-9]+$ ]] || die "cannot read the free space of $root from df (got '$avail_kb')"
  free_gb=$(( avail_kb / 1048576 ))
  (( free_gb >= MIN_FREE_GB )) \
    || die "only ${free_gb} GB free in Docker's data root $root, where the kind nodes keep their images; the walkthrough needs about ${MIN_FREE_GB} GB (the NGC images unpack to roughly 60 GB, and kind never garbage-collects images). Free space, or set MIN_FREE_GB=0 if the images are already in the nodes"
}

read_sysctl() { cat "/proc/sys/${1//.//}" 2>/dev/null || echo 0; }

check_inotify() {
  local watches instances
  watches=$(read_sysctl fs.inotify.max_user_watches)
  instances=$(read_sysctl fs.inotify.max_user_instances)
  if (( watches < MIN_INOTIFY_WATCHES || instances < MIN_INOTIFY_INSTANCES )); then
    warn "fs.inotify.max_user_watches=$watches, max_user_instances=$instances: pods in kind may fail with \"too many open files\"; raise them (see the header of $SCRIPT): sudo sysctl -w fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=8192"
  fi
}

check_volume_mounts() {
  # The check NVIDIA documents for the volume-mount device list (what kind nodes rely on).
  docker run --rm -v /dev/null:/var/run/nvidia-container-devices/all ubuntu:22.04 nvidia-smi -L >/dev/null \
    || die "GPUs are not injected through volume mounts; run: sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place && sudo systemctl restart docker"
}

preflight() {
  step "checking prerequisites"
  check_tools
  split_image "$IMG" >/dev/null
  check_pins
  check_driver
  check_docker_runtime
  check_disk
  check_inotify
  check_volume_mounts
}

# ------------------------------------------------------------------ cluster

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; }

# check_gpu_setup: what nvkind leaves when it finished. It stops at the first
# node whose toolkit install fails and registers the RuntimeClass only at the
# very end; with toolkit.enabled=false nothing else would give the node GPUs.
check_gpu_setup() {
  kc get --raw /version >/dev/null 2>&1 \
    || die_recreate "cannot reach cluster $CLUSTER_NAME through context $CONTEXT (if only the kubeconfig entry is gone: kind export kubeconfig --name $CLUSTER_NAME)"
  kc get runtimeclass nvidia >/dev/null 2>&1 \
    || die_recreate "the nvidia RuntimeClass is missing: nvkind did not finish setting up the GPU nodes"
  local node workers=0
  while read -r node; do
    [[ -n $node && $node != *-control-plane* ]] || continue
    workers=$((workers + 1))
    docker exec "$node" nvidia-ctk --version >/dev/null 2>&1 \
      || die_recreate "nvidia-ctk is missing in node $node: nvkind's container toolkit install failed there"
  done < <(kind get nodes --name "$CLUSTER_NAME" 2>/dev/null)
  (( workers > 0 )) || die_recreate "cluster $CLUSTER_NAME has no worker node"
}

create_cluster() {
  if cluster_exists; then
    step "kind cluster $CLUSTER_NAME exists; checking its GPU set-up before reusing it"
    check_gpu_setup
    return
  fi
  step "creating kind cluster $CLUSTER_NAME with nvkind ($KIND_NODE_IMAGE)"
  local rc=0
  nvkind cluster create --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config-template hack/kind/cluster.yaml || rc=$?
  cluster_exists || die "nvkind did not create cluster $CLUSTER_NAME (exit status $rc; its output is above)"
  # NVIDIA's own CI lets nvkind fail (it can exit non-zero after the nodes are
  # up) and then checks for the RuntimeClass; so does this.
  (( rc == 0 )) || warn "nvkind exited with status $rc; checking what it set up"
  check_gpu_setup
}

install_gpu_operator() {
  step "installing the NVIDIA GPU Operator $GPU_OPERATOR_VERSION (host driver, in-node toolkit)"
  kc wait --for=condition=Ready node --all --timeout=300s
  kc create namespace gpu-operator --dry-run=client -o yaml | kc apply -f -
  kc label --overwrite namespace gpu-operator pod-security.kubernetes.io/enforce=privileged
  helm repo add nvidia https://helm.ngc.nvidia.com/nvidia --force-update >/dev/null
  helm repo update nvidia >/dev/null
  # The values of NVIDIA's nvkind CI, its one tested kind path: the driver lives
  # on the host and nvkind installed the toolkit in the node, so the Operator
  # manages neither; no DCGM exporter; NFD labels the GPU node.
  # shellcheck disable=SC2086  # GPU_OPERATOR_ARGS is a list of words by design
  helm --kube-context "$CONTEXT" upgrade --install gpu-operator nvidia/gpu-operator \
    --version "$GPU_OPERATOR_VERSION" --namespace gpu-operator \
    --set driver.enabled=false --set toolkit.enabled=false \
    --set dcgmExporter.enabled=false --set nfd.enabled=true \
    --wait --timeout 15m $GPU_OPERATOR_ARGS
}

gpus_allocatable() {
  local counts
  counts=$(kc get nodes -o jsonpath='{range .items[*]}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}')
  grep -qE '^[1-9][0-9]*$' <<<"$counts"
}

# ------------------------------------------------------------------ operator image

build_operator_image() {
  step "building $IMG"
  docker build -t "$IMG" .
  local id
  id=$(docker image inspect --format '{{.Id}}' "$IMG")
  DEPLOY_IMG=$(build_ref "$IMG" "$id")
  docker tag "$IMG" "$DEPLOY_IMG"
}

# load_image REF: kind load docker-image, or, when that fails (kind issue 3795:
# "content digest ... not found" under Docker's containerd image store), a
# single-platform archive of it.
load_image() {
  local ref=$1 archive platform
  kind load docker-image "$ref" --name "$CLUSTER_NAME" && return 0
  warn "kind load docker-image failed; retrying with a single-platform archive (docs/troubleshooting.md, kind)"
  platform=$(docker version --format '{{.Server.Os}}/{{.Server.Arch}}')
  archive=$(mktemp "${TMPDIR:-/tmp}/mnist-serving-operator.XXXXXX")
  if docker image save --platform "$platform" -o "$archive" "$ref" \
      && kind load image-archive "$archive" --name "$CLUSTER_NAME"; then
    rm -f "$archive"
    return 0
  fi
  rm -f "$archive"
  die "could not load $ref into kind; see docs/troubleshooting.md, kind"
}

install_chart() {
  step "installing the mnist-serving chart with $DEPLOY_IMG"
  local parts repo tag
  parts=$(split_image "$DEPLOY_IMG") || exit 1
  repo=${parts% *} tag=${parts##* }
  helm --kube-context "$CONTEXT" upgrade --install mnist-serving charts/mnist-serving \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace \
    --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=IfNotPresent \
    --set stageDefaults.images.stages="$DEPLOY_IMG" \
    --wait --timeout 5m
}

# ------------------------------------------------------------------ sample

sample_phase() {
  kc get -f "$SAMPLE" -n "$SAMPLE_NAMESPACE" -o jsonpath='{.status.phase}' 2>/dev/null
}

sample_settled() {
  local phase
  phase=$(sample_phase)
  [[ "$phase" == Ready || "$phase" == Failed ]]
}

run_sample() {
  step "applying $SAMPLE and waiting for Ready (up to ${SAMPLE_TIMEOUT}s: the first NGC image pulls are slow)"
  kc apply -n "$SAMPLE_NAMESPACE" -f "$SAMPLE"
  wait_for "the sample to become Ready or Failed" "$SAMPLE_TIMEOUT" sample_settled
  kc get -f "$SAMPLE" -n "$SAMPLE_NAMESPACE" -o wide
  [[ "$(sample_phase)" == Ready ]] \
    || die "the sample failed: kubectl --context $CONTEXT describe -n $SAMPLE_NAMESPACE -f $SAMPLE"
  kc wait -n "$SAMPLE_NAMESPACE" -f "$SAMPLE" --for=condition=Ready --timeout=60s
}

main() {
  preflight
  create_cluster
  install_gpu_operator
  step "waiting for nvidia.com/gpu to be allocatable"
  wait_for "nvidia.com/gpu allocatable on a node" 600 gpus_allocatable
  kc get nodes -o custom-columns='NODE:.metadata.name,GPUS:.status.allocatable.nvidia\.com/gpu,PRODUCT:.metadata.labels.nvidia\.com/gpu\.product'
  build_operator_image
  step "loading $DEPLOY_IMG into the nodes"
  load_image "$DEPLOY_IMG"
  install_chart
  if [[ "${SKIP_SAMPLE:-0}" == 1 ]]; then
    step "SKIP_SAMPLE=1: chart installed; apply a MnistServing yourself"
    return
  fi
  run_sample
  step "done: kubectl --context $CONTEXT get mnistservings -A; delete with: kind delete cluster --name $CLUSTER_NAME"
}

# Run when executed; only define the functions when sourced (the tests do).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  cd "$(dirname "$0")/../.."
  main "$@"
fi
