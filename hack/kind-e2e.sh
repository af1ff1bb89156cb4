#!/usr/bin/env bash
# End-to-end run on a kind cluster, for a machine with Docker and kind (the project's own
# machines have neither: there the same tests run against the local control plane, see
# DESIGN.md §7). Steps: kind create cluster, docker build, kind load docker-image, CRDs by
# server-side apply, helm install of the chart with that image, then the integration tests
# (`make test`'s hack/test.sh) with KUBECONFIG pointing at kind.
# Environment: KIND_CLUSTER (default azs-csp-e2e), IMAGE (default azs-csp-operator:e2e),
# KEEP_CLUSTER=1 keeps the cluster afterwards; KIND, DOCKER, KUBECTL, HELM name the tools
# (default: found on PATH).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster="${KIND_CLUSTER:-azs-csp-e2e}"
image="${IMAGE:-azs-csp-operator:e2e}"
kind="${KIND:-kind}"
docker="${DOCKER:-docker}"
kubectl="${KUBECTL:-kubectl}"
helm="${HELM:-helm}"
for tool in "$kind" "$docker" "$kubectl" "$helm" cargo; do
  command -v "$tool" >/dev/null || die "$tool is required for kind-e2e (needs Docker; not available on the project's machines)"
done

# The tests use these instead of the cached tools of the local control plane.
HELM="$(command -v "$helm")" KUBECTL="$(command -v "$kubectl")"
export HELM KUBECTL

kubeconfig="$(mktemp)"
cleanup() {
  rm -f "$kubeconfig"
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    "$kind" delete cluster --name "$cluster" || true
  fi
}
trap cleanup EXIT

if ! "$kind" get clusters | grep -qx "$cluster"; then
  "$kind" create cluster --name "$cluster" --wait 120s
fi
"$kind" get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG="$kubeconfig"

"$docker" build -t "$image" "$REPO_ROOT"
"$kind" load docker-image "$image" --name "$cluster"

"$kubectl" apply --server-side -f "$REPO_ROOT/crds/"
"$kubectl" wait --for condition=established --timeout=60s \
  crd/registrations.csp.azurestack.io crd/customersubscriptions.csp.azurestack.io

"$helm" upgrade --install azs-csp "$REPO_ROOT/charts/azs-csp-operator" \
  --namespace azs-csp-system --create-namespace \
  --set crds.install=false \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=IfNotPresent \
  --set-file catalog.data="$REPO_ROOT/examples/catalog.yaml" \
  --wait --timeout 180s
"$kubectl" -n azs-csp-system get deploy,pods

# The integration tests start their own operator processes, each watching only its test
# namespaces; the in-cluster release above watches the whole cluster with the example
# catalog. Stop it first so that only the tests' operators write (the Deployment was proven
# to roll out, probes included).
"$kubectl" -n azs-csp-system scale deployment --all --replicas=0
"$HACK_DIR/test.sh" # make test's runner: with KUBECONFIG set it uses that cluster
log "kind e2e passed"
