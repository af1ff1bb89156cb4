#!/usr/bin/env bash
# Stops and starts the kube-apiserver of the local control plane (cluster-up.sh), leaving
# etcd and the controller manager running: an API server outage that clients must ride out.
#
#   hack/apiserver-restart.sh stop [--kill]     # TERM (or KILL: a crash) and wait until the port is free
#   hack/apiserver-restart.sh start             # start it again and wait for /readyz
#   hack/apiserver-restart.sh restart [SECONDS] # stop, stay down SECONDS (default 10), start
#
# `stop` saves the exact command line of the running kube-apiserver and `start` runs that
# command line again, so the restarted server has the same flags, port, certificates and
# etcd: clients reconnect to the same address with the same credentials. Its log is appended
# to .cluster/logs/kube-apiserver.log. Environment: APISERVER_START_TIMEOUT (seconds, default 60).
set -euo pipefail
# shellcheck source=cluster-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

START_TIMEOUT="${APISERVER_START_TIMEOUT:-60}"
ARGS_FILE="$CLUSTER_DIR/apiserver.args"

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

stop_apiserver() {
  local signal="${1:-TERM}" pid i
  load_cluster_env || die "no local cluster ($CLUSTER_ENV missing): start it with make cluster-up"
  if ! pid="$(component_pid kube-apiserver)"; then
    [ -f "$ARGS_FILE" ] || die "kube-apiserver is not running and no saved command line ($ARGS_FILE) to restart it from"
    log "kube-apiserver is already stopped"
    return 0
  fi
  # The command line, NUL-separated, exactly as cluster-up.sh started it.
  cp "/proc/$pid/cmdline" "$ARGS_FILE.tmp"
  mv "$ARGS_FILE.tmp" "$ARGS_FILE"
  log "stopping kube-apiserver (pid $pid, SIG$signal) on port $APISERVER_PORT"
  if [ "$signal" = KILL ]; then
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    pid_alive "$pid" && die "kube-apiserver (pid $pid) survived KILL"
  else
    terminate "$pid"
  fi
  rm -f "$PID_DIR/kube-apiserver.pid"
  for ((i = 0; i < 100; i++)); do
    port_listening "$APISERVER_PORT" || break
    sleep 0.1
  done
  port_listening "$APISERVER_PORT" && die "port $APISERVER_PORT is still listening after stopping kube-apiserver"
  log "kube-apiserver stopped"
}

start_apiserver() {
  local args=() pid deadline
  load_cluster_env || die "no local cluster ($CLUSTER_ENV missing): start it with make cluster-up"
  if pid="$(component_pid kube-apiserver)"; then
    log "kube-apiserver is already running (pid $pid)"
    return 0
  fi
  [ -f "$ARGS_FILE" ] || die "no saved kube-apiserver command line ($ARGS_FILE): stop it with '$0 stop' first"
  mapfile -d '' args <"$ARGS_FILE"
  if [ "${#args[@]}" -lt 2 ] || [ "${args[0]}" != "$BIN_DIR/kube-apiserver" ]; then
    die "$ARGS_FILE does not hold a kube-apiserver command line of this cluster"
  fi
  printf '%s\n' "${args[@]}" | grep -qxF -- "--secure-port=$APISERVER_PORT" ||
    die "$ARGS_FILE is from an older cluster (not port $APISERVER_PORT): restart the cluster with make cluster-down cluster-up"
  port_listening "$APISERVER_PORT" && die "port $APISERVER_PORT is taken by another process"
  mkdir -p "$PID_DIR" "$LOG_DIR"
  log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT (same flags as before)"
  # As cluster-up.sh's start_daemon: own session, log appended, the lock fd closed.
  setsid "${args[@]}" </dev/null >>"$LOG_DIR/kube-apiserver.log" 2>&1 9>&- &
  echo $! >"$PID_DIR/kube-apiserver.pid"
  deadline=$((SECONDS + START_TIMEOUT))
  until [ "$(api_curl /readyz 2>/dev/null)" = ok ]; do
    if ! component_pid kube-apiserver >/dev/null; then
      print_log_tail kube-apiserver
      die "kube-apiserver exited while starting (log: $LOG_DIR/kube-apiserver.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      print_log_tail kube-apiserver
      die "kube-apiserver not ready after ${START_TIMEOUT}s (log: $LOG_DIR/kube-apiserver.log)"
    fi
    sleep 0.2
  done
  log "kube-apiserver ready (pid $(<"$PID_DIR/kube-apiserver.pid"))"
}

[ $# -ge 1 ] || usage
command="$1"
shift
# Serialise with cluster-up/-down, so that neither sees a half-restarted cluster.
cluster_lock
case "$command" in
  stop)
    case "${1:-}" in
      "") stop_apiserver TERM ;;
      --kill) stop_apiserver KILL ;;
      *) usage ;;
    esac
    ;;
  start)
    [ $# -eq 0 ] || usage
    start_apiserver
    ;;
  restart)
    down="${1:-10}"
    [[ "$down" =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
    stop_apiserver TERM
    log "kube-apiserver stays down for ${down}s"
    sleep "$down"
    start_apiserver
    ;;
  *) usage ;;
esac
