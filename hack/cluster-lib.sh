# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts
# Shared state and helpers of the local control plane (cluster-up/-down/-status).
# Sourced, not executed. Layout under $CLUSTER_DIR (<repo>/.cluster, git-ignored):
#   pki/         CA, serving, admin and service-account keys (kept across cluster-down)
#   etcd/        etcd data (removed by cluster-down: every cluster-up is a fresh cluster)
#   logs/        one log per component (kept for post-mortems, truncated on start)
#   pids/        <component>.pid of the running processes
#   run/         scratch dirs of the components (cert-dir)
#   cluster.env  ports of the running cluster
#   kubeconfig   admin kubeconfig (client cert CN=admin, O=system:masters, data embedded)

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PKI_DIR="$CLUSTER_DIR/pki"
ETCD_DATA_DIR="$CLUSTER_DIR/etcd"
LOG_DIR="$CLUSTER_DIR/logs"
PID_DIR="$CLUSTER_DIR/pids"
RUN_DIR="$CLUSTER_DIR/run"
CLUSTER_ENV="$CLUSTER_DIR/cluster.env"
CLUSTER_KUBECONFIG="$CLUSTER_DIR/kubeconfig"
# The local node (NODE=1, hack/node-up.sh; DESIGN.md §11) lives in a network namespace of
# its own, joined to the host by one veth pair with these private addresses; the API server
# advertises the host end, where the node reaches it.
NODE_HOST_IP=172.31.254.1
NODE_IP=172.31.254.2
NODE_LINK_CIDR=172.31.254.0/30
SERVICE_CIDR=10.96.0.0/24
# Stop order: dependants first.
COMPONENTS=(kube-controller-manager kube-apiserver etcd)
STOP_GRACE_SECONDS="${STOP_GRACE_SECONDS:-10}"

# Takes an exclusive lock on the cluster dir for the rest of the calling script, so that
# concurrent cluster-up/cluster-down calls (e.g. parallel test runs) serialise.
# fd 9 must not leak into the daemons (see start_daemon).
cluster_lock() {
  mkdir -p "$CLUSTER_DIR"
  exec 9>"$CLUSTER_DIR/.lock"
  if ! flock -n 9; then
    log "waiting for another cluster script to finish (lock $CLUSTER_DIR/.lock)"
    flock 9
  fi
}

# Loads the ports of the running cluster; returns 1 when there is no cluster.env.
load_cluster_env() {
  [ -f "$CLUSTER_ENV" ] || return 1
  # shellcheck source=/dev/null
  . "$CLUSTER_ENV"
}

# pid of a component from its pid file, if the process is alive and is really ours
# (its command line names our cluster dir: guards against pid reuse).
component_pid() {
  local f="$PID_DIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CLUSTER_DIR/" || return 1
  printf '%s\n' "$pid"
}

# True while the process exists and has not finished exiting. A daemon killed by the
# script that started it stays a zombie until reaped, but it has released its ports by then.
# A Go process's main thread turns zombie before its other threads (which still hold the
# sockets) are gone, so only a zombie with no other thread counts as dead.
pid_alive() {
  local state tasks
  kill -0 "$1" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] || return 1
  [ "$state" != Z ] && return 0
  tasks=("/proc/$1/task"/*)
  [ ${#tasks[@]} -gt 1 ]
}

# Processes of our binaries that work on our cluster dir, whether or not a pid file names
# them (e.g. after the pid files were deleted by hand).
stray_pids() {
  local pid cmd
  for pid in $(pgrep -f -- "$CLUSTER_DIR/" || true); do
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || continue
    case "$cmd" in
      "$BIN_DIR/etcd "* | "$BIN_DIR/kube-apiserver "* | "$BIN_DIR/kube-controller-manager "*)
        pid_alive "$pid" && printf '%s\n' "$pid" ;;
    esac
  done
}

# Stops every component, dependants first so that none waits on a dead dependency:
# TERM, then KILL after $STOP_GRACE_SECONDS. Returns once they are gone.
stop_cluster() {
  local c pid strays=()
  for c in "${COMPONENTS[@]}"; do
    pid="$(component_pid "$c")" || continue
    log "stopping $c (pid $pid)"
    terminate "$pid"
  done
  while read -r pid; do
    [ -n "$pid" ] && strays+=("$pid")
  done < <(stray_pids)
  if [ ${#strays[@]} -gt 0 ]; then
    log "stopping leftover control plane processes (pids ${strays[*]})"
    terminate "${strays[@]}"
  fi
  rm -rf "$PID_DIR" "$CLUSTER_ENV" "$CLUSTER_KUBECONFIG" "$ETCD_DATA_DIR" "$RUN_DIR"
}

# terminate PID...: TERM, KILL after the grace period, wait until gone.
terminate() {
  local i
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE_SECONDS * 10; i++)); do
    any_alive "$@" || return 0
    sleep 0.1
  done
  log "pids $* still running after ${STOP_GRACE_SECONDS}s, sending KILL"
  kill -KILL "$@" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    any_alive "$@" || return 0
    sleep 0.1
  done
  die "processes $* survived KILL"
}

any_alive() {
  local pid
  for pid in "$@"; do pid_alive "$pid" && return 0; done
  return 1
}

# curl against the apiserver with the admin client certificate.
api_curl() {
  curl -sS --fail --max-time 5 --cacert "$PKI_DIR/ca.crt" \
    --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" "https://127.0.0.1:$APISERVER_PORT$1"
}

# Healthy = every component alive and the apiserver answers /readyz.
cluster_healthy() {
  local c
  load_cluster_env || return 1
  [ -f "$CLUSTER_KUBECONFIG" ] || return 1
  for c in "${COMPONENTS[@]}"; do component_pid "$c" >/dev/null || return 1; done
  [ "$(api_curl /readyz 2>/dev/null)" = ok ]
}

# sign_cert NAME SUBJECT EXTENSIONS: key + CSR in $PKI_DIR, signed by the cluster CA.
sign_cert() {
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI_DIR/$1.key" -subj "$2" \
    -out "$PKI_DIR/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$1.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 365 -sha256 -out "$PKI_DIR/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm -f "$PKI_DIR/$1.csr"
  chmod 600 "$PKI_DIR/$1.key"
}

print_log_tail() {
  local f="$LOG_DIR/$1.log"
  [ -f "$f" ] || return 0
  log "last lines of $f:"
  tail -n "${2:-25}" "$f" | sed 's/^/    /' >&2
}
