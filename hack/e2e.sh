#!/usr/bin/env bash
# make e2e: the end-to-end suite (hack/e2e-suite.sh) on this machine, without Docker: the
# local cluster with a real node (make node-up), the image built without Docker
# (make image) and imported into the node's containerd (make image-load), then the suite.
# Stops the node and the cluster afterwards when it started them (KEEP=1 keeps them).
# Prints node-up's seconds, the image's size and the suite's figures.
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

IMAGE="${IMAGE:-azs-csp-operator:dev}"
export IMAGE
started=$SECONDS

started_cluster="" started_node=""
cluster_healthy || started_cluster=1
netns_exists || started_node=1
cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" != 1 ]; then
    if [ -n "$started_node" ]; then
      "$HACK_DIR/node-down.sh" || true
    else
      log "leaving the node running: it ran before make e2e"
    fi
    if [ -n "$started_cluster" ]; then "$HACK_DIR/cluster-down.sh" >/dev/null 2>&1 || true; fi
  fi
  [ "$rc" -eq 0 ] && log "make e2e passed in $(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s"
}
trap cleanup EXIT

t0=$SECONDS
"$HACK_DIR/node-up.sh"
log "node-up: $((SECONDS - t0))s"
t0=$SECONDS
"$HACK_DIR/image.sh" build >/dev/null
log "image build: $((SECONDS - t0))s"
t0=$SECONDS
"$HACK_DIR/image.sh" load
log "image load: $((SECONDS - t0))s"

KUBECONFIG="$CLUSTER_KUBECONFIG" KUBECTL="$BIN_DIR/kubectl" HELM="$BIN_DIR/helm" \
  E2E_INSPECT="$HACK_DIR/node-inspect.sh" "$HACK_DIR/e2e-suite.sh"
