#!/usr/bin/env bash
# Stops the local control plane started by cluster-up.sh (TERM, then KILL after
# $STOP_GRACE_SECONDS) and removes its etcd data. The PKI and the logs are kept. A local node
# that serves this cluster (make node-up) is stopped first: it depends on the cluster, and its
# API server forward would keep the API server's port.
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

# Before the cluster lock: node-up takes the node lock and then the cluster's.
if [ "$(cat "$NODE_OWNER" 2>/dev/null || true)" = "$NODE_DIR" ]; then
  log "stopping the local node first (it runs on this cluster)"
  "$HACK_DIR/node-down.sh"
fi
cluster_lock
ports=()
if load_cluster_env; then
  ports=("$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT")
fi
if [ ${#ports[@]} -eq 0 ] && [ ! -d "$PID_DIR" ] && [ -z "$(stray_pids)" ]; then
  log "cluster not running"
  rm -rf "$ETCD_DATA_DIR" "$CLUSTER_KUBECONFIG" "$RUN_DIR"
  exit 0
fi
stop_cluster
port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for port in "${ports[@]}"; do
  for ((i = 0; i < 50; i++)); do
    port_listening "$port" || break
    sleep 0.1
  done
  if port_listening "$port"; then
    ss -Hltnp "sport = :$port" >&2 || true
    die "port $port is still listening after stopping the cluster"
  fi
done
log "cluster stopped (logs kept in $LOG_DIR)"
