# mnist-serving: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
export MNIST_SERVING_CACHE ?= $(HOME)/.cache/mnist-serving
SETUP_STAMP := $(VENV)/.setup-stamp
IMG ?= mnist-serving-operator:dev
PYTEST := $(PY) -m pytest

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(SETUP_STAMP): pyproject.toml scripts/setup.sh
	scripts/setup.sh
	@touch $@

.PHONY: setup
setup: $(SETUP_STAMP) ## Create .venv with everything the local run and the tests need

.PHONY: k8s
k8s: ## Build (or reuse) the pinned control-plane binaries under ~/.cache/mnist-serving
	scripts/build-k8s.sh

.PHONY: node-build
node-build: setup k8s ## Build (or reuse) what the real-node tier needs: Debian packages, CoreDNS, local-path-provisioner, images
	PY=$(PY) scripts/build-node.sh

.PHONY: node
node: node-build ## Bring up one real Kubernetes node here and keep it running (prints KUBECONFIG; Ctrl-C tears it down)
	$(PY) -m tests.harness.node up

.PHONY: node-down
node-down: setup ## Remove everything a crashed or killed real-node run left on the host
	$(PY) -m tests.harness.node down

.PHONY: browser
browser: ## Install the headless browser the report test uses (Debian chromium-headless-shell)
	scripts/browser.sh

.PHONY: demo
demo: setup ## Run the whole walkthrough locally (CPU, no cluster): train, export, engine, serve, bench, analyze
	$(VENV)/bin/mnist-serving run examples/local.yaml

.PHONY: test
test: setup k8s node-build browser ## Run the whole test suite (unit, integration, real control plane, real node)
	$(PYTEST) -m "not scale"

.PHONY: test-fast
test-fast: setup browser ## Unit tests and quick integration tests only (a few minutes)
	$(PYTEST) -m "not slow and not cluster and not scale and not node"

.PHONY: test-e2e
test-e2e: setup k8s ## Only the real control-plane tier (kube-apiserver, etcd, KWOK)
	$(PYTEST) -m "cluster and not scale"

.PHONY: test-node
test-node: node-build ## Only the real-node tier (one kubelet + containerd node; needs root)
	$(PYTEST) -m node

.PHONY: bench-node
bench-node: node-build ## The real-node tier, writing its figures to docs/BENCHMARKS.md ("Real node")
	MNIST_SERVING_WRITE_BENCHMARKS=1 $(PYTEST) -m node -s

.PHONY: test-scale
test-scale: setup k8s ## The 100-, 500- and 1,000-resource scale tests (slow; writes docs/BENCHMARKS.md)
	MNIST_SERVING_WRITE_BENCHMARKS=1 $(PYTEST) -m scale -s

.PHONY: lint
lint: setup ## Layer contracts (import-linter)
	$(VENV)/bin/lint-imports

.PHONY: manifests
manifests: setup ## Regenerate the CRD and RBAC under manifests/ and the chart's copies from the spec model
	$(VENV)/bin/mnist-serving crd --write-manifests manifests
	$(PY) scripts/gen-chart.py

.PHONY: docs
docs: setup ## Regenerate docs/reference.md (spec model) and CONTRACT.md's stage flags (stage CLIs)
	$(VENV)/bin/mnist-serving reference --write docs/reference.md
	$(PY) scripts/gen-contract.py --write

.PHONY: render
render: setup ## Print every object the operator would create for the sample resource
	$(VENV)/bin/mnist-serving render manifests/samples/mnistserving.yaml

.PHONY: bench
bench: setup ## Serving benchmark on this machine; writes docs/BENCHMARKS.md
	$(PY) benchmarks/serving.py

.PHONY: bench-sweep
bench-sweep: setup ## A local CPU sweep (examples/sweep-local.yaml, repeats 3); writes docs/BENCHMARKS.md
	$(PY) benchmarks/sweep.py run examples/sweep-local.yaml --write

.PHONY: bench-slo
bench-slo: setup ## A local CPU SLO search (examples/slo-local.yaml); writes docs/BENCHMARKS.md
	$(PY) benchmarks/slo.py --write

.PHONY: bench-cache
bench-cache: setup ## The operator cache's memory and read at 1,000 Ready resources; writes docs/BENCHMARKS.md
	$(PY) benchmarks/cache.py

.PHONY: bench-sweep-kwok
bench-sweep-kwok: setup k8s ## A 16-point sweep on KWOK against four points by hand, and report --cluster; writes docs/BENCHMARKS.md
	$(PY) benchmarks/sweep_kwok.py

.PHONY: docker-build
docker-build: ## Build the operator image (needs a Docker engine; no torch inside)
	docker build -t $(IMG) .

.PHONY: deploy
deploy: ## Install CRD, RBAC and the operator into the current kubectl context
	kubectl apply -k manifests/

.PHONY: undeploy
undeploy: ## Remove what deploy installed
	kubectl delete -k manifests/ --ignore-not-found

.PHONY: kind
kind: ## GPU kind cluster (nvkind) + GPU Operator + this chart + the sample, waited to Ready (needs Docker + an NVIDIA GPU)
	IMG=$(IMG) hack/kind/create-cluster.sh

.PHONY: chart
chart: ## Regenerate the chart's CRD and RBAC rules (charts/mnist-serving/files) from the operator source
	$(PY) scripts/gen-chart.py

.PHONY: clean
clean: ## Remove local run directories (keeps .venv and the binary cache)
	rm -rf runs/
