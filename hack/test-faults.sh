#!/usr/bin/env bash
# make test-faults: the fault tests (tests/faults.rs) against the local control plane: an API
# server restart under load, the operator killed mid-convergence, a failing/slow/flapping
# metadata upstream, random specs at admission and malformed catalogs.
#
# One test kills and restarts the local kube-apiserver (hack/apiserver-restart.sh), so nothing
# else may use the cluster meanwhile: the tests run one at a time, and never alongside other
# test binaries. Starts the local cluster when none runs and stops it afterwards if it did.
# KUBECONFIG must be unset (or point at the local cluster): the restart needs our own API server.
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

"$HACK_DIR/build-control-plane.sh"
if ! "$HACK_DIR/cluster-status.sh" >/dev/null 2>&1; then
  "$HACK_DIR/cluster-up.sh"
  started=1
fi

# The tests are #[ignore]d in the plain `cargo test` run (make test) because of the restart.
cargo test --locked --test faults -- --ignored --test-threads=1 --nocapture "$@" 2>&1
