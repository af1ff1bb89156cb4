#!/usr/bin/env bash
# Starts the local node (DESIGN.md §11; layout in node-lib.sh) for the cluster of this
# worktree, starting that cluster with NODE=1 first when it is not running. Installs
# containerd, runc, the CNI plugins, umoci and skopeo from Debian when missing, builds kubelet,
# kube-scheduler, kube-proxy and pause into the cache once, and waits until the node is Ready.
# Does nothing when the node already runs. Needs root (namespaces, cgroups, mounts).
# Environment: NODE_UP_TIMEOUT (seconds to wait for the node, default 120).
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

TIMEOUT="${NODE_UP_TIMEOUT:-120}"
started=$SECONDS

[ "$(id -u)" = 0 ] || die "the local node needs root (network and mount namespaces, cgroups)"
case "$NODE_DIR/" in
  /run/* | /var/lib/* | /var/log/* | /tmp/*) die "the node's directory $NODE_DIR must not be under /run, /var/lib, /var/log or /tmp (the node mounts tmpfs there)" ;;
esac

install_packages() {
  local c missing=()
  for c in "${NODE_COMMANDS[@]}"; do command -v "$c" >/dev/null || missing+=("$c"); done
  [ -f "$CNI_BIN_DIR/bridge" ] || missing+=("$CNI_BIN_DIR/bridge")
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]}; install the Debian packages ${NODE_PACKAGES[*]}"
  log "installing ${NODE_PACKAGES[*]} (missing: ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    "${NODE_PACKAGES[@]}" >"$LOG_DIR/node-apt.log" 2>&1 ||
    die "apt-get install failed (log: $LOG_DIR/node-apt.log)"
}

mkdir -p "$LOG_DIR"
install_packages
"$HACK_DIR/build-control-plane.sh" --node
node_lock

if netns_exists; then
  owner="$(cat "$NODE_OWNER" 2>/dev/null || true)"
  [ "$owner" = "$NODE_DIR" ] ||
    die "a node serving ${owner:-an unknown cluster} runs on this machine (one per machine): make node-down there first"
  if node_ready && [ -n "$(node_pids)" ] && cluster_healthy; then
    log "node $NODE_NAME already running"
    exit 0
  fi
  log "found a partial node; stopping it and starting afresh"
fi
"$HACK_DIR/node-down.sh" --locked
# Without the node lock (fd 8): the cluster's daemons would inherit it and hold it until
# cluster-down, and node-down would wait for them forever.
NODE=1 "$HACK_DIR/cluster-up.sh" >/dev/null 8>&-
load_cluster_env
[ "${CLUSTER_NODE:-0}" = 1 ] || die "the cluster runs without NODE=1"

on_exit() {
  local rc=$? name
  if [ "$rc" -ne 0 ]; then
    for name in supervisor containerd kubelet kube-proxy kube-scheduler apiserver-proxy; do
      [ -s "$(node_log "$name")" ] && log "log: $(node_log "$name")"
    done
    log "node-up failed; stopping what it started"
    "$HACK_DIR/node-down.sh" --locked || true
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The private addresses must be free on the host, or its traffic would be captured.
if ip -4 -o addr show | grep -qF " ${NODE_HOST_IP%.*}." || [ -n "$(ip -4 route show "$POD_CIDR")" ]; then
  die "$NODE_LINK_CIDR or $POD_CIDR is already in use on this host"
fi
printf '%s\n' "$NODE_DIR" >"$NODE_OWNER"
mkdir -p "$NODE_DIR"

# --- network: a namespace with one veth pair to the host and no default route ---
# On a host that never had a named network namespace, `ip netns add` first makes /run/netns,
# a directory mounted on itself: node-down takes both away again when this mark says so.
[ -e /run/netns ] || : >"$NODE_DIR/made-run-netns"
ip netns add "$NODE_NETNS"
ip link add "$NODE_HOST_LINK" type veth peer name "$NODE_LINK" netns "$NODE_NETNS"
ip addr add "$NODE_HOST_IP/30" dev "$NODE_HOST_LINK"
ip link set "$NODE_HOST_LINK" up
ip -n "$NODE_NETNS" addr add "$NODE_IP/30" dev "$NODE_LINK"
ip -n "$NODE_NETNS" link set "$NODE_LINK" up
ip -n "$NODE_NETNS" link set lo up
# The host answers pods directly (it does not forward: its own replies only).
ip route add "$POD_CIDR" via "$NODE_IP" dev "$NODE_HOST_LINK"

# --- cgroups: /$NODE_CGROUP in every hierarchy, the kubelet's cgroupRoot ---
while read -r h; do
  mkdir -p "$h/$NODE_CGROUP"
  if [ -f "$h/cpuset.cpus" ]; then
    cat "$h/cpuset.cpus" >"$h/$NODE_CGROUP/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h/$NODE_CGROUP/cpuset.mems"
  fi
done < <(cgroup_hierarchies)

# --- certificates and kubeconfigs ---
if ! openssl x509 -checkend 86400 -noout -in "$PKI_DIR/kubelet.crt" >/dev/null 2>&1 ||
  ! openssl verify -CAfile "$PKI_DIR/ca.crt" "$PKI_DIR/kubelet.crt" >/dev/null 2>&1; then
  sign_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
fi
b64() { base64 -w0 <"$1"; }
write_kubeconfig() {
  local out="$1" user="$2"
  (
    umask 077
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: azs-csp-local
  cluster:
    server: https://$NODE_HOST_IP:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI_DIR/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$PKI_DIR/$user.crt")
    client-key-data: $(b64 "$PKI_DIR/$user.key")
contexts:
- name: azs-csp-local
  context:
    cluster: azs-csp-local
    user: $user
current-context: azs-csp-local
EOF
  )
}
write_kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet
write_kubeconfig "$NODE_DIR/admin.kubeconfig" admin

# --- containerd: everything in $NODE_DIR; restrict_oom_score_adj because root lacks
# CAP_SYS_RESOURCE here (runc cannot lower oom_score_adj otherwise) ---
cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CONTAINERD_SOCKET"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_DIR/cni"
EOF

# --- CNI: one bridge, addresses from $POD_CIDR, no masquerading ---
mkdir -p "$NODE_DIR/cni"
cat >"$NODE_DIR/cni/10-azs-csp-node.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "azs-csp-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# --- kubelet: cgroupfs under /$NODE_CGROUP; no cluster DNS (pods get no nameserver, so
# they never send a query anywhere; the operator needs none: KUBERNETES_SERVICE_HOST is an
# address) ---
echo '# no DNS server on the local node (hack/node-up.sh)' >"$NODE_DIR/resolv.conf"
cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI_DIR/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
resolvConf: "$NODE_DIR/resolv.conf"
clusterDomain: cluster.local
oomScoreAdj: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
podLogsDir: /var/log/pods
registerNode: true
EOF

# --- kube-proxy (iptables mode, inside the namespace); conntrack limits left to the
# kernel's defaults: nf_conntrack_max is global ---
cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: "$NODE_DIR/admin.kubeconfig"
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

# --- the sandbox image, built from the cached pause binary ---
pause_archive="$TOOLS_DIR/images/pause.tar"
if [ ! -s "$pause_archive" ]; then
  rootfs="$(mktemp -d)"
  install -m 0755 "$BIN_DIR/pause" "$rootfs/pause"
  "$HACK_DIR/oci-image.sh" pack "$rootfs" "$PAUSE_IMAGE" "$pause_archive" \
    --config.entrypoint /pause --config.user 65535:65535
  rm -rf "$rootfs"
fi
skopeo --insecure-policy copy --quiet "oci-archive:$pause_archive" "docker-archive:$NODE_DIR/pause.tar:$PAUSE_IMAGE"

# --- start: the API server forward on the host, the node in its namespaces ---
for name in supervisor containerd kubelet kube-proxy kube-scheduler apiserver-proxy; do
  : >"$(node_log "$name")"
done
log "starting the node $NODE_NAME ($NODE_IP, network namespace $NODE_NETNS; logs: $LOG_DIR/node-*.log)"
setsid "$HACK_DIR/node-run.sh" proxy </dev/null >"$(node_log apiserver-proxy)" 2>&1 8>&- 9>&- &
setsid nsenter --net="/run/netns/$NODE_NETNS" -- unshare --mount --propagation private -- \
  "$HACK_DIR/node-run.sh" node </dev/null >"$(node_log supervisor)" 2>&1 8>&- 9>&- &
supervisor=$!

deadline=$((SECONDS + TIMEOUT))
until node_ready; do
  if ! kill -0 "$supervisor" 2>/dev/null; then
    print_log_tail node-supervisor
    for name in containerd kubelet kube-proxy kube-scheduler; do print_log_tail "node-$name" 10; done
    die "the node's processes exited before the node became Ready (logs: $LOG_DIR/node-*.log)"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    print_log_tail node-kubelet
    die "node $NODE_NAME not Ready after ${TIMEOUT}s (logs: $(node_log kubelet), $(node_log containerd))"
  fi
  sleep 0.5
done
# Pods reach the API server through the `kubernetes` Service once kube-proxy wrote its rules.
until ip netns exec "$NODE_NETNS" iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    print_log_tail node-kube-proxy
    die "kube-proxy wrote no rule for the kubernetes Service within ${TIMEOUT}s (log: $(node_log kube-proxy))"
  fi
  sleep 0.5
done
log "node $NODE_NAME Ready after $((SECONDS - started))s"
