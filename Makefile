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

.PHONY: cluster-up
cluster-up: ## Start the local cluster (no-op when it is already running)
	$(HACK)/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and delete its etcd data
	$(HACK)/cluster-down.sh

.PHONY: cluster-status
cluster-status: ## Show whether the local cluster is running and healthy (exit 1 if not)
	$(HACK)/cluster-status.sh
