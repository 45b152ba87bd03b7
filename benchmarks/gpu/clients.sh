#!/usr/bin/env bash
# On the lent GPU machine, after device.sh installed the tools: the TorchScript model with
# INSTANCES GPU instances, measured by each of CLIENTS perf_analyzer clients at one total
# concurrency (gRPC, 50 % stability: one 600 s device call holds the 2- and 4-client runs and
# their scaling checks; at 25 % a point at c=1024 took up to 194 s). The work directory of
# examples/gpu-torch.yaml is reused (training and export are not repeated).
#   benchmarks/gpu/clients.sh INSTANCES [CLIENTS...]   (default clients: 2 4; CONCURRENCY=1024)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
instances=${1:?usage: clients.sh INSTANCES [CLIENTS...]}; shift
c=${CONCURRENCY:-1024}
mkdir -p /tmp/gpu/specs
for n in "${@:-2 4}"; do
  spec=/tmp/gpu/specs/clients-$n.yaml
  "$here/device.sh" derive "$here/../../examples/gpu-torch.yaml" "$spec" \
    "spec.serving.models=[pytorch, bls]" "spec.serving.instances=$instances" \
    "spec.benchmark.modelAnalyzer.enabled=false" "spec.benchmark.modelAnalyzer.applyBest=false" \
    "spec.benchmark.perfAnalyzer.models=[pytorch]" "spec.benchmark.perfAnalyzer.clients=$n" \
    "spec.benchmark.perfAnalyzer.concurrency={start: $c, end: $c, step: 1}" \
    "spec.benchmark.perfAnalyzer.stabilityPercentage=50"
  OUT=${OUT:-/tmp/gpu/out}/clients-$n "$here/device.sh" run "$spec" || echo "clients $n: exit $?"
done
