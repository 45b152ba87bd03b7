#!/usr/bin/env bash
# On the lent GPU machine, after device.sh installed the tools: the TorchScript model
# (and mnist_bls over it) with INSTANCES GPU instances each, measured by 1, 2 and 4
# perf_analyzer clients over the total concurrency 256:1024:256 (gRPC). The work
# directory of examples/gpu-torch.yaml is reused (training and export are not repeated).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
instances=${1:?usage: clients.sh INSTANCES [CLIENTS...]}; shift
mkdir -p /tmp/gpu/specs
for n in "${@:-1 2 4}"; do
  spec=/tmp/gpu/specs/clients-$n.yaml
  "$here/device.sh" derive "$here/../../examples/gpu-torch.yaml" "$spec" \
    "spec.serving.models=[pytorch, bls]" "spec.serving.instances=$instances" \
    "spec.benchmark.modelAnalyzer.enabled=false" "spec.benchmark.modelAnalyzer.applyBest=false" \
    "spec.benchmark.perfAnalyzer.models=[pytorch, bls]" "spec.benchmark.perfAnalyzer.clients=$n" \
    "spec.benchmark.perfAnalyzer.concurrency={start: 256, end: 1024, step: 256}"
  OUT=${OUT:-/tmp/gpu/out}/clients-$n "$here/device.sh" run "$spec" || echo "clients $n: exit $?"
done
