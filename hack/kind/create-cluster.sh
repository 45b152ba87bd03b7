#!/usr/bin/env bash
# Create a GPU-enabled kind cluster, install the NVIDIA GPU Operator, build and
# load the operator image, install the mnist-serving chart, apply the sample
# MnistServing and wait until it is Ready. Re-running reuses what exists.
#
# Needs: an NVIDIA GPU with its driver on the host, docker with the NVIDIA
# Container Toolkit, and kind, nvkind, kubectl, helm on PATH. The host setup
# (once, as NVIDIA's nvkind documents it):
#   sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled
#   sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place
#   sudo systemctl restart docker
#   go install github.com/NVIDIA/nvkind/cmd/nvkind@latest
#
# Settings (environment):
#   CLUSTER_NAME          kind cluster name                  (mnist-serving)
#   KIND_NODE_IMAGE       kind node image                    (kindest/node:v1.35.1)
#   GPU_OPERATOR_VERSION  nvidia/gpu-operator chart version  (v26.3.1)
#   GPU_OPERATOR_ARGS     extra `helm upgrade` args for the GPU Operator
#   IMG                   operator image to build and load   (mnist-serving-operator:dev)
#   SAMPLE                MnistServing to apply              (manifests/samples/mnistserving.yaml)
#   SAMPLE_NAMESPACE      namespace of the sample            (default)
#   SAMPLE_TIMEOUT        seconds to wait for Ready          (3600: NGC images are ~10 GB each)
#   SKIP_SAMPLE=1         stop after installing the chart
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER_NAME=${CLUSTER_NAME:-mnist-serving}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.35.1}
GPU_OPERATOR_VERSION=${GPU_OPERATOR_VERSION:-v26.3.1}
GPU_OPERATOR_ARGS=${GPU_OPERATOR_ARGS:-}
IMG=${IMG:-mnist-serving-operator:dev}
# The spec's default stages image; tagged onto the local build too so a sample
# that leaves spec.images.stages out still finds the image in the node.
DEFAULT_STAGES_IMG=ghcr.io/mnist-serving/operator:0.1.0
SAMPLE=${SAMPLE:-manifests/samples/mnistserving.yaml}
SAMPLE_NAMESPACE=${SAMPLE_NAMESPACE:-default}
SAMPLE_TIMEOUT=${SAMPLE_TIMEOUT:-3600}
OPERATOR_NAMESPACE=mnist-serving-system
CONTEXT="kind-${CLUSTER_NAME}"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'create-cluster: error: %s\n' "$*" >&2; exit 1; }
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

preflight() {
  step "checking prerequisites"
  local tool
  for tool in docker kind nvkind kubectl helm nvidia-smi; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH (see the header of $0)"
  done
  nvidia-smi -L >/dev/null || die "nvidia-smi -L failed: no working NVIDIA driver on this host"
  docker info --format '{{.DefaultRuntime}}' | grep -qx nvidia \
    || die "docker's default runtime is not nvidia; run: sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled && sudo systemctl restart docker"
  # The check NVIDIA documents for the volume-mount device list (what kind nodes rely on).
  docker run --rm -v /dev/null:/var/run/nvidia-container-devices/all ubuntu:22.04 nvidia-smi -L >/dev/null \
    || die "GPUs are not injected through volume mounts; run: sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place && sudo systemctl restart docker"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    step "kind cluster $CLUSTER_NAME exists; reusing it"
    return
  fi
  step "creating kind cluster $CLUSTER_NAME with nvkind ($KIND_NODE_IMAGE)"
  # nvkind can exit non-zero on benign umount errors after the nodes are up
  # (NVIDIA's own CI tolerates it); node readiness below is the real check.
  nvkind cluster create --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config-template hack/kind/cluster.yaml \
    || echo "create-cluster: nvkind exited non-zero; checking the nodes" >&2
  kind get clusters | grep -qx "$CLUSTER_NAME" || die "nvkind did not create cluster $CLUSTER_NAME"
}

install_gpu_operator() {
  step "installing the NVIDIA GPU Operator $GPU_OPERATOR_VERSION (host driver, in-node toolkit)"
  kc wait --for=condition=Ready node --all --timeout=300s
  kc create namespace gpu-operator --dry-run=client -o yaml | kc apply -f -
  kc label --overwrite namespace gpu-operator pod-security.kubernetes.io/enforce=privileged
  helm repo add nvidia https://helm.ngc.nvidia.com/nvidia --force-update >/dev/null
  helm repo update nvidia >/dev/null
  # The driver lives on the host and nvkind installed the container toolkit in
  # the node, so the Operator must manage neither.
  # shellcheck disable=SC2086  # GPU_OPERATOR_ARGS is a list of words by design
  helm --kube-context "$CONTEXT" upgrade --install gpu-operator nvidia/gpu-operator \
    --version "$GPU_OPERATOR_VERSION" --namespace gpu-operator \
    --set driver.enabled=false --set toolkit.enabled=false \
    --wait --timeout 15m $GPU_OPERATOR_ARGS
}

gpus_allocatable() {
  local counts
  counts=$(kc get nodes -o jsonpath='{range .items[*]}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}')
  grep -qE '^[1-9][0-9]*$' <<<"$counts"
}

load_operator_image() {
  step "building $IMG and loading it into the nodes"
  docker build -t "$IMG" -t "$DEFAULT_STAGES_IMG" .
  kind load docker-image "$IMG" "$DEFAULT_STAGES_IMG" --name "$CLUSTER_NAME"
}

install_chart() {
  step "installing the mnist-serving chart"
  local repo=${IMG%:*} tag=${IMG##*:}
  [[ "$IMG" == *:* ]] || tag=latest
  helm --kube-context "$CONTEXT" upgrade --install mnist-serving charts/mnist-serving \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace \
    --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=IfNotPresent \
    --set stageDefaults.images.stages="$IMG" \
    --wait --timeout 5m
}

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
  load_operator_image
  install_chart
  if [[ "${SKIP_SAMPLE:-0}" == 1 ]]; then
    step "SKIP_SAMPLE=1: chart installed; apply a MnistServing yourself"
    return
  fi
  run_sample
  step "done: kubectl --context $CONTEXT get mnistservings -A; delete with: kind delete cluster --name $CLUSTER_NAME"
}

main "$@"
