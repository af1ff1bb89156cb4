#!/usr/bin/env bash
# Starts a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)
# on free 127.0.0.1 ports, without Docker or nodes, and writes an admin kubeconfig to
# $CLUSTER_DIR/kubeconfig. Does nothing when that cluster is already running.
# Environment: CLUSTER_UP_TIMEOUT (seconds per readiness wait, default 60); NODE=1 adds the
# API server settings that a kubelet node needs (hack/node-up.sh starts the node itself).
set -euo pipefail
# shellcheck source=cluster-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

TIMEOUT="${CLUSTER_UP_TIMEOUT:-60}"
SA_ISSUER=https://kubernetes.default.svc.cluster.local
# All default controllers except those that only act on nodes or on a cloud: there are no
# nodes (and each controller costs startup time: it gets its own service account token).
KCM_CONTROLLERS='*'
for c in node-ipam node-lifecycle node-route cloud-node-lifecycle service-lb ttl taint-eviction \
  device-taint-eviction persistentvolume-attach-detach; do
  KCM_CONTROLLERS+=",-$c-controller"
done
NODE="${NODE:-0}"
if [ "$NODE" = 1 ]; then
  # It removes the not-ready taint once the kubelet reports Ready.
  KCM_CONTROLLERS="${KCM_CONTROLLERS/,-node-lifecycle-controller/}"
fi

"$HACK_DIR/build-control-plane.sh"
cluster_lock

if cluster_healthy; then
  # A cluster ready for a node serves everything else too; the other way round it cannot.
  if [ "$NODE" = 1 ] && [ "${CLUSTER_NODE:-0}" != 1 ]; then
    die "the running cluster was started without NODE=1: make cluster-down first"
  fi
  log "cluster already running"
  echo "kubeconfig: $CLUSTER_KUBECONFIG"
  echo "export KUBECONFIG=$CLUSTER_KUBECONFIG"
  exit 0
fi
if load_cluster_env || [ -n "$(stray_pids)" ] || [ -d "$PID_DIR" ]; then
  log "found an unhealthy or partial cluster; stopping it and starting afresh"
fi
stop_cluster # leftovers of a crashed cluster, stale pid files, old etcd data

on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    log "cluster-up failed; stopping what it started"
    stop_cluster || true
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$PKI_DIR" "$ETCD_DATA_DIR" "$LOG_DIR" "$PID_DIR" "$RUN_DIR"

# --- PKI (kept across cluster-down; regenerated when missing or expiring within a day) ---
pki_valid() {
  local f
  for f in ca.key ca.crt apiserver.key apiserver.crt admin.key admin.crt sa.key sa.pub; do
    [ -s "$PKI_DIR/$f" ] || return 1
  done
  for f in ca apiserver admin; do
    openssl x509 -checkend 86400 -noout -in "$PKI_DIR/$f.crt" >/dev/null || return 1
  done
  # The node reaches the API server at the host end of its veth pair.
  openssl x509 -noout -ext subjectAltName -in "$PKI_DIR/apiserver.crt" | grep -qF "IP Address:$NODE_HOST_IP"
}

if ! pki_valid; then
  log "generating PKI in $PKI_DIR"
  rm -f "$PKI_DIR"/*
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -subj "/CN=azs-csp-operator-local-ca" \
    -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  sign_cert apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_HOST_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign_cert admin "/O=system:masters/CN=admin" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI_DIR/sa.key" 2>/dev/null
  openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  chmod 600 "$PKI_DIR"/*.key
fi

# --- ports ---
read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
cat >"$CLUSTER_ENV" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
CLUSTER_NODE=$NODE
EOF

# --- kubeconfig (admin; also used by the controller manager) ---
b64() { base64 -w0 <"$1"; }
umask_old="$(umask)"
umask 077
cat >"$CLUSTER_KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: azs-csp-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI_DIR/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$PKI_DIR/admin.crt")
    client-key-data: $(b64 "$PKI_DIR/admin.key")
contexts:
- name: azs-csp-local
  context:
    cluster: azs-csp-local
    user: admin
current-context: azs-csp-local
EOF
umask "$umask_old"

# start_daemon NAME ARGS...: runs $BIN_DIR/NAME in its own session (survives this script
# and Ctrl-C in the calling terminal), output to $LOG_DIR/NAME.log, pid to $PID_DIR/NAME.pid.
# fd 9 (the cluster lock) is closed so the daemon does not hold the lock forever.
start_daemon() {
  local name="$1"
  shift
  setsid "$BIN_DIR/$name" "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 9>&- &
  echo $! >"$PID_DIR/$name.pid"
}

# wait_for NAME WHAT CMD...: polls CMD until it succeeds; fails with the log tail when
# NAME dies or $TIMEOUT passes.
wait_for() {
  local name="$1" what="$2" deadline=$((SECONDS + TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    # Not component_pid: it also checks the command line, which for a moment after the fork
    # is still this script's (the exec of setsid and then of the daemon has not happened
    # yet); a pid just written by start_daemon needs no check against reuse.
    if ! pid_alive "$(<"$PID_DIR/$name.pid")"; then
      log "error: $name exited before $what (log: $LOG_DIR/$name.log)"
      print_log_tail "$name"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "error: timed out after ${TIMEOUT}s waiting for $what (log: $LOG_DIR/$name.log)"
      print_log_tail "$name"
      exit 1
    fi
    sleep 0.2
  done
}

etcd_healthy() { curl -sf --max-time 2 "$ETCD_URL/health" | grep -q '"health":"true"'; }
apiserver_ready() { [ "$(api_curl /readyz)" = ok ]; }
default_sa_exists() { api_curl /api/v1/namespaces/default/serviceaccounts/default; }
kcm_healthy() { curl -sfk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"; }

log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
start_daemon etcd \
  --name=azs-csp-local \
  --data-dir="$ETCD_DATA_DIR" \
  --listen-client-urls="$ETCD_URL" \
  --advertise-client-urls="$ETCD_URL" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="azs-csp-local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --heartbeat-interval=10 \
  --election-timeout=100 \
  --unsafe-no-fsync
wait_for etcd "etcd /health on $ETCD_URL" etcd_healthy

# Without a node, nothing serves the `kubernetes` Service, so no endpoint is published. With
# one, the pods reach the API server through that Service at the host end of the node's
# veth pair (node-up forwards it to loopback), and the API server reaches the kubelet
# (logs, exec) with the admin certificate, which the kubelet's webhook authorizer admits.
apiserver_node_flags=(--advertise-address=127.0.0.1 --endpoint-reconciler-type=none --authorization-mode=RBAC)
if [ "$NODE" = 1 ]; then
  # shellcheck disable=SC2054  # the comma is part of the flag's value
  apiserver_node_flags=(
    --advertise-address="$NODE_HOST_IP"
    --endpoint-reconciler-type=lease
    --authorization-mode=Node,RBAC
    --enable-admission-plugins=NodeRestriction
    --kubelet-client-certificate="$PKI_DIR/admin.crt"
    --kubelet-client-key="$PKI_DIR/admin.key"
    --kubelet-preferred-address-types=InternalIP
  )
fi

log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
start_daemon kube-apiserver \
  --etcd-servers="$ETCD_URL" \
  --bind-address=127.0.0.1 \
  "${apiserver_node_flags[@]}" \
  --secure-port="$APISERVER_PORT" \
  --cert-dir="$RUN_DIR/kube-apiserver" \
  --tls-cert-file="$PKI_DIR/apiserver.crt" \
  --tls-private-key-file="$PKI_DIR/apiserver.key" \
  --client-ca-file="$PKI_DIR/ca.crt" \
  --service-account-issuer="$SA_ISSUER" \
  --service-account-key-file="$PKI_DIR/sa.pub" \
  --service-account-signing-key-file="$PKI_DIR/sa.key" \
  --api-audiences="$SA_ISSUER" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --allow-privileged=true \
  --profiling=false

wait_for kube-apiserver "kube-apiserver /readyz" apiserver_ready
log "kube-apiserver ready"
# Only once the API server is ready: the controller manager gives up on an API server that is
# not healthy within 10 s, which a loaded machine's (RBAC bootstrap) can take.
log "starting kube-controller-manager (healthz on https://127.0.0.1:$KCM_PORT)"
start_daemon kube-controller-manager \
  --kubeconfig="$CLUSTER_KUBECONFIG" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --cert-dir="$RUN_DIR/kube-controller-manager" \
  --leader-elect=false \
  --use-service-account-credentials \
  --service-account-private-key-file="$PKI_DIR/sa.key" \
  --root-ca-file="$PKI_DIR/ca.crt" \
  --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
  --cluster-signing-key-file="$PKI_DIR/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --controllers="$KCM_CONTROLLERS"

log "waiting for the controller manager"
wait_for kube-controller-manager "kube-controller-manager /healthz" kcm_healthy
wait_for kube-controller-manager "the default ServiceAccount (service account controller)" default_sa_exists

log "cluster ready"
"$BIN_DIR/kubectl" --kubeconfig="$CLUSTER_KUBECONFIG" version 2>/dev/null | grep -i '^server version' || true
echo "kubeconfig: $CLUSTER_KUBECONFIG"
echo "export KUBECONFIG=$CLUSTER_KUBECONFIG"
