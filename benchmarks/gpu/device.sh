#!/usr/bin/env bash
# On the lent GPU machine (the device tool runs it in the repository root):
#   benchmarks/gpu/device.sh install N       unpack .device/N-*.tar.xz into /tmp/gpu
#   benchmarks/gpu/device.sh check           the installed tools answer (tritonserver, perf_analyzer,
#                                            model-analyzer, numpy 1 in the python backend's path)
#   benchmarks/gpu/device.sh run SPEC [ARGS] the local runner on SPEC, workdir /tmp/gpu/runs/<name>
#                                            (a second call resumes it), with nvidia-smi and
#                                            Triton's /metrics sampled, everything copied to $OUT
#   benchmarks/gpu/device.sh derive BASE OUT k.path=VALUE ...  BASE with those fields set
#   benchmarks/gpu/device.sh cmd ...         any command in that environment
# The machine keeps /tmp/gpu only while it stays warm (30 s idle), so the calls follow each other.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
G=/tmp/gpu
# numpy 1 first: the pytriton python-backend stub is built against it (numpy 2 empties its outputs)
export PYTHONPATH=$G/numpy:$G/serve:$G/analyzer:$ROOT/operator:$ROOT/jobs
export PATH=$G/bin:$PATH
export PERF_ANALYZER=$G/serve/perf_analyzer_2.45/bin/perf_analyzer MODEL_ANALYZER=$G/bin/model-analyzer
export MNIST_SERVING_CACHE=$G/cache
PY=$(command -v python3)
OUT=${OUT:-$G/out}

tools() {
  mkdir -p "$G/bin"
  ln -sf "$PERF_ANALYZER" "$G/bin/perf_analyzer"   # model-analyzer runs perf_analyzer from PATH
  printf '#!%s\nimport sys\nfrom model_analyzer.entrypoint import main\nsys.exit(main())\n' "$PY" \
    > "$G/bin/model-analyzer"
  chmod +x "$G/bin/model-analyzer"
}

sample() {   # nvidia-smi every second and Triton's metrics every 2 s, until killed
  local dir=$1 port=$2
  nvidia-smi --query-gpu=timestamp,utilization.gpu,power.draw,memory.used --format=csv -l 1 \
    > "$dir/nvidia-smi.csv" 2>&1 &
  "$PY" - "$port" "$dir/triton-metrics.txt" <<'PYEOF' &
import sys, time, urllib.request
port, path = sys.argv[1], sys.argv[2]
with open(path, "a") as out:
    while True:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            out.write(f"# scrape {time.time():.3f}\n{text}")
            out.flush()
        except Exception:
            pass
        time.sleep(2)
PYEOF
}

case ${1:-} in
  install)
    mkdir -p "$G"
    part=$(ls "$ROOT"/.device/"$2"-*.tar.xz)
    tar -C "$G" -xJf "$part"
    if [ "$2" = 2 ]; then
      # the python backend stub reads the interpreter's own site-packages before
      # PYTHONPATH: numpy 1 must replace the numpy 2 installed there
      site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
      rm -rf "$site"/numpy "$site"/numpy-*.dist-info "$site"/numpy.libs
      cp -r "$G"/numpy/numpy "$G"/numpy/numpy-*.dist-info "$G"/numpy/numpy.libs "$site"/
    fi
    du -sh "$G"/* ;;
  check)
    tools
    "$PY" -c "import numpy, torch; print('numpy', numpy.__version__, numpy.__file__); print('torch', torch.__version__, torch.cuda.is_available())"
    "$PERF_ANALYZER" --version 2>&1 | head -2 || true
    "$MODEL_ANALYZER" --version 2>&1 | tail -1
    "$PY" -c "from mnist_jobs.lib import triton; i = triton.find_tritonserver(); print(i); print(triton.backend_directory(i))" ;;
  run)
    tools
    spec=$2; shift 2
    name=$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['metadata']['name'])" "$spec")
    work=$G/runs/$name; mkdir -p "$work" "$OUT/$name"
    sample "$OUT/$name" 8002
    rc=0
    "$PY" -m mnist_operator.tools.cli run "$spec" --workdir "$work" --http-port 8000 --grpc-port 8001 \
      --metrics-port 8002 "$@" 2>&1 | tee -a "$OUT/$name/run.log" || rc=$?
    kill $(jobs -p) 2>/dev/null || true
    # the small files: results, status, CSVs and logs (no model files)
    (cd "$work" && find . -type f \( -name "*.json" -o -name "*.csv" -o -name "*.log" -o -name "*.yaml" \
       -o -name "*.pbtxt" \) -size -4M -print0 | tar --null -cf - -T - ) | tar -C "$OUT/$name" -xf -
    exit $rc ;;
  derive)   # derive BASE OUT key.path=YAML ...: BASE with those fields set, written to OUT
    "$PY" - "${@:2}" <<'PYEOF'
import sys, yaml
base, out, *sets = sys.argv[1:]
doc = yaml.safe_load(open(base))
for item in sets:
    path, _, value = item.partition("=")
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = yaml.safe_load(value)
yaml.safe_dump(doc, open(out, "w"), sort_keys=False)
print(out, ":", "; ".join(sets))
PYEOF
    ;;
  cmd)
    tools; shift; "$@" ;;
  *) sed -n 2,12p "$0"; exit 2 ;;
esac
