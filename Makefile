# Developer entry points. Append further targets (test, run, ...) below their own section.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

HACK := hack

# ---- Local control plane (etcd + kube-apiserver + kube-controller-manager, no Docker) ----
# Binaries are built once from Go modules into ~/.cache/azs-csp-operator (see hack/versions.env);
# cluster state lives in .cluster/ and the admin kubeconfig in .cluster/kubeconfig.

.PHONY: control-plane
control-plane: ## Build (or reuse) the cached kube-apiserver, kube-controller-manager, kubectl, etcd, helm
	$(HACK)/build-control-plane.sh

# NODE=1 (make cluster-up NODE=1, make test NODE=1): the API server settings a kubelet node
# needs, and for make test the node itself (make node-up).
NODE ?= 0
export NODE

.PHONY: cluster-up
cluster-up: ## Start the local cluster (no-op when it is already running); NODE=1: ready for a node
	$(HACK)/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster (and the local node on it, if one runs) and delete its etcd data
	$(HACK)/cluster-down.sh

.PHONY: cluster-status
cluster-status: ## Show whether the local cluster is running and healthy (exit 1 if not)
	$(HACK)/cluster-status.sh

# ---- The two commands: make run, make test ----

.PHONY: run
run: ## Cluster up, CRDs, the operator on examples/catalog.yaml, the example manifests; MODE=azure: against the emulator; Ctrl-C stops
	MODE=$(MODE) $(HACK)/run.sh

.PHONY: test
test: ## Unit tests + integration tests against a real kube-apiserver (starts/stops the local cluster); NODE=1: with the node up
	$(if $(filter 1,$(NODE)),$(HACK)/node-up.sh)
	$(HACK)/test.sh

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings denied, shellcheck on hack/
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	shellcheck -x $(HACK)/*.sh $(HACK)/helm $(HACK)/kubectl

.PHONY: crds
crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	cargo run --locked --quiet -- crds --output-dir crds
	$(HACK)/chart-crds.sh

# ---- Helm chart, container image, kind ----

IMAGE ?= azs-csp-operator:dev

.PHONY: tools
tools: ## Install the chart tools (kubeconform, checkov, Helm 4) into the cache
	$(HACK)/tools.sh install

.PHONY: chart-crds
chart-crds: ## Copy crds/*.yaml into the chart (charts/azs-csp-operator/files/crds)
	$(HACK)/chart-crds.sh

.PHONY: chart-check
chart-check: control-plane ## Lint the chart: CRD copies, helm lint, checkov, kubeconform + server dry-run (cluster up)
	$(HACK)/chart-check.sh

.PHONY: image
image: ## Build the image $(IMAGE) as an OCI archive without Docker (target/image/; `docker build .` makes the same)
	IMAGE=$(IMAGE) $(HACK)/image.sh build

.PHONY: image-load
image-load: ## Import the image archive of make image into the local node's containerd
	IMAGE=$(IMAGE) $(HACK)/image.sh load

.PHONY: e2e
e2e: ## Cluster + node + image + helm install of the chart, then the end-to-end suite (hack/e2e-suite.sh)
	IMAGE=$(IMAGE) $(HACK)/e2e.sh

.PHONY: kind-e2e
kind-e2e: ## The same end-to-end suite on a kind cluster (needs Docker and kind)
	$(HACK)/kind-e2e.sh

# ---- Local node: kubelet + containerd in a network namespace of its own (DESIGN.md §11) ----
# Needs root. One node per machine; it serves the cluster of the worktree that started it.

.PHONY: node-up
node-up: ## Start the local node (and the cluster with NODE=1); no-op when it runs
	$(HACK)/node-up.sh

.PHONY: node-down
node-down: ## Stop the local node and remove every trace of it on the host (the cluster keeps running)
	$(HACK)/node-down.sh

.PHONY: node-safety
node-safety: ## Test the node's two rules (no packet leaves the machine; node-down leaves the host as it was) and that cluster-down stops the node
	$(HACK)/node-safety.sh

# ---- Benchmark (not part of make test) ----

.PHONY: bench
bench: ## Scale benchmark on the local control plane: make bench [N=10000] [MODE=local|azure|usage] (docs/benchmarks.md)
	AZS_BENCH_MODE=$(MODE) $(HACK)/bench.sh $(N)

# ---- Fault tests (not part of make test: they restart the local API server) ----

.PHONY: test-faults
test-faults: ## Fault tests: API server restart, operator SIGKILL, upstream faults, bad input (run alone: restarts the local API server)
	$(HACK)/test-faults.sh
