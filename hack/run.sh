#!/usr/bin/env bash
# make run: the operator on the local cluster with the example catalog and manifests.
# Ctrl-C stops the operator, and the cluster if this script started it.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

started=""
operator_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$operator_pid" ]; then
    kill "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  if [ -n "$started" ]; then
    log "stopping the cluster this run started"
    "$HACK_DIR/cluster-down.sh"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HACK_DIR/build-control-plane.sh"
if ! "$HACK_DIR/cluster-status.sh" >/dev/null 2>&1; then
  "$HACK_DIR/cluster-up.sh"
  started=1
fi
export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
k() { "$HACK_DIR/kubectl" "$@"; }

cargo build --locked
k apply --server-side -f crds/ >/dev/null
k wait --for condition=Established crd/registrations.csp.azurestack.io crd/customersubscriptions.csp.azurestack.io --timeout=60s >/dev/null

operator_log="$CLUSTER_DIR/logs/operator.log"
mkdir -p "$(dirname "$operator_log")"
target/debug/azs-csp-operator run --catalog-file examples/catalog.yaml --metrics-addr 127.0.0.1:8080 >"$operator_log" 2>&1 &
operator_pid=$!
log "operator started (pid $operator_pid, log $operator_log)"

# Order matters where age decides: the original Registration and CustomerSubscription first.
k apply -f examples/registrations.yaml
k wait -n partner-contoso registration/contoso-stack --for=jsonpath='{.status.observedGeneration}' --timeout=60s >/dev/null
k apply -f examples/duplicate-registration.yaml -f examples/customer-subscriptions.yaml
k wait -n partner-contoso customersubscription/fabrikam --for=condition=Ready --timeout=60s >/dev/null
k apply -f examples/duplicate-customer-subscription.yaml
k wait -n partner-contoso azsreg,custsub --all --for=jsonpath='{.status.observedGeneration}' --timeout=60s >/dev/null
sleep 1 # let the Registrations count the last attachments
k get azs-csp -A
echo
log "the operator keeps running (log: $operator_log); try: kubectl --kubeconfig $KUBECONFIG -n partner-contoso describe custsub northwind"
log "press Ctrl-C to stop"
wait "$operator_pid"
