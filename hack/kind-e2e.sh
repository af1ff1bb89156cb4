#!/usr/bin/env bash
# make kind-e2e: the end-to-end suite of make e2e (hack/e2e-suite.sh) on a kind cluster, for a
# machine with Docker and kind (the project's own machines have neither: there make e2e runs
# it on the local node). Only creating the cluster and loading the image differ from
# make e2e: kind create cluster, docker build (the Dockerfile builds the same image as
# make image), kind load docker-image. The process-level check of the container's user and
# read-only root is skipped (the suite still checks the pod's security context, the enforced
# restricted Pod Security Standard and the rest).
# Environment: KIND_CLUSTER (default azs-csp-e2e), IMAGE (default azs-csp-operator:e2e),
# KEEP_CLUSTER=1 keeps the cluster afterwards; KIND, DOCKER, KUBECTL, HELM name the tools
# (default: found on PATH).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster="${KIND_CLUSTER:-azs-csp-e2e}"
IMAGE="${IMAGE:-azs-csp-operator:e2e}"
kind="${KIND:-kind}"
docker="${DOCKER:-docker}"
kubectl="${KUBECTL:-kubectl}"
helm="${HELM:-helm}"
for tool in "$kind" "$docker" "$kubectl" "$helm" cargo; do
  command -v "$tool" >/dev/null || die "$tool is required for kind-e2e (needs Docker; not available on the project's machines)"
done
KUBECTL="$(command -v "$kubectl")" HELM="$(command -v "$helm")"
export KUBECTL HELM IMAGE

KUBECONFIG="$(mktemp)"
export KUBECONFIG
cleanup() {
  rm -f "$KUBECONFIG"
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    "$kind" delete cluster --name "$cluster" || true
  fi
}
trap cleanup EXIT

if ! "$kind" get clusters | grep -qx "$cluster"; then
  "$kind" create cluster --name "$cluster" --wait 120s
fi
"$kind" get kubeconfig --name "$cluster" >"$KUBECONFIG"

"$docker" build -t "$IMAGE" "$REPO_ROOT"
"$kind" load docker-image "$IMAGE" --name "$cluster"

"$HACK_DIR/e2e-suite.sh"
log "kind e2e passed"
