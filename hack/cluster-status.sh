#!/usr/bin/env bash
# Reports on the local control plane. Exit 0 when it is running and healthy, 1 otherwise.
set -euo pipefail
# shellcheck source=cluster-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

if ! load_cluster_env; then
  echo "cluster: not running (no $CLUSTER_ENV; start it with make cluster-up)"
  exit 1
fi

healthy=0
check() { # check LABEL ENDPOINT CMD...: prints one status line, clears $healthy on failure
  local label="$1" endpoint="$2" pid state
  shift 2
  pid="$(component_pid "$label")" || pid=""
  if [ -z "$pid" ]; then
    state="NOT RUNNING"
    healthy=1
  elif "$@" >/dev/null 2>&1; then
    state="healthy (pid $pid)"
  else
    state="UNHEALTHY (pid $pid)"
    healthy=1
  fi
  printf '  %-24s %-34s %s\n' "$label" "$endpoint" "$state"
}
etcd_ok() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }
apiserver_ok() { [ "$(api_curl /readyz)" = ok ]; }
kcm_ok() { curl -sfk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"; }

echo "components:"
check etcd "http://127.0.0.1:$ETCD_CLIENT_PORT" etcd_ok
check kube-apiserver "https://127.0.0.1:$APISERVER_PORT" apiserver_ok
check kube-controller-manager "https://127.0.0.1:$KCM_PORT" kcm_ok
echo "kubeconfig: $CLUSTER_KUBECONFIG"
echo "logs:       $LOG_DIR"
if [ "$healthy" -eq 0 ]; then
  version="$(api_curl /version | jq -r .gitVersion 2>/dev/null)" || version="unknown"
  echo "server:     $version"
  echo "cluster: running"
else
  echo "cluster: UNHEALTHY (see the logs; restart with make cluster-down cluster-up)"
fi
exit "$healthy"
