#!/usr/bin/env bash
# make test: unit tests plus the integration tests against a real kube-apiserver. Brings up
# the local cluster when none is running (or uses $KUBECONFIG when set) and tears down only
# what it started. The last line printed is cargo's own summary of the last test binary.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

started=""
cleanup() {
  if [ -n "$started" ]; then
    "$HACK_DIR/cluster-down.sh" >"$CLUSTER_DIR/cluster-down.log" 2>&1 || log "cluster-down failed: see $CLUSTER_DIR/cluster-down.log"
  fi
}
trap cleanup EXIT

if [ -n "${KUBECONFIG:-}" ]; then
  log "integration tests use KUBECONFIG=$KUBECONFIG"
  kubectl_cmd=(kubectl)
else
  "$HACK_DIR/build-control-plane.sh"
  if ! "$HACK_DIR/cluster-status.sh" >/dev/null 2>&1; then
    "$HACK_DIR/cluster-up.sh"
    started=1
  fi
  kubectl_cmd=("$HACK_DIR/kubectl")
fi
log "API server: $("${kubectl_cmd[@]}" get --raw /version | jq -r .gitVersion)"
# Leftovers of killed runs: test namespaces stuck Terminating on the Registration finalizer,
# and hour-old ones never deleted. Prints one line when it swept something; never fails.
"$HACK_DIR/sweep-test-namespaces.sh" "${kubectl_cmd[@]}" || log "sweeping leftover test namespaces failed; continuing"

# No doc tests: the crates have none, and their empty summary must not be the closing line.
# --workspace: the test kit (testkit/) has unit tests of its own.
cargo test --locked --workspace --lib --bins --tests "$@" 2>&1
