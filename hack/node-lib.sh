# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts
# Shared state of the local node (node-up/-down/-run; DESIGN.md §11). Sourced, not executed.
#
# The whole node (containerd, kubelet, kube-proxy, kube-scheduler and every pod) runs
#   - in the network namespace $NODE_NETNS, joined to the host only by the veth pair
#     $NODE_HOST_LINK ($NODE_HOST_IP) <-> $NODE_LINK ($NODE_IP), with no default route: its
#     iptables rules and forwarding sysctls never touch the host's namespace, and a packet
#     for any other address has no route (nothing can leave the machine);
#   - in a mount namespace of its own with tmpfs over /run, /var/lib, /var/log and /tmp, and
#     files over the kernel tunables the kubelet insists on: the host's mounts, files and
#     sysctls stay as they are, and every mount vanishes with the node's last process;
#   - in the cgroup /$NODE_CGROUP of every hierarchy (the kubelet's cgroupRoot), so
#     node-down finds and stops every process of the node, pods included.
# Names are fixed (and the kubelet's ports too, inside the namespace), so one node per
# machine: $NODE_LOCK serialises node-up/-down and $NODE_OWNER names the cluster it serves.
# Files: $NODE_DIR (<repo>/.cluster/node: configs, certificates, containerd's store),
# logs in $LOG_DIR (node-*.log, kept for post-mortems).

# shellcheck source=cluster-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

NODE_NAME=azs-csp-node
NODE_NETNS=azs-csp-node
NODE_CGROUP=azs-csp-node
NODE_HOST_LINK=azs-csp-h
NODE_LINK=azs-csp-n
POD_CIDR=10.244.0.0/24
NODE_DIR="$CLUSTER_DIR/node"
NODE_LOCK="$CACHE_ROOT/node.lock"
NODE_OWNER="$CACHE_ROOT/node.owner"
CONTAINERD_SOCKET="$NODE_DIR/containerd.sock"
# The sandbox image the kubelet and containerd use; built from $BIN_DIR/pause, never pulled.
PAUSE_IMAGE=registry.k8s.io/pause:azs-csp-local
# Debian packages of the node's runtime, installed with apt-get when a command is missing.
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat umoci skopeo busybox-static)
NODE_COMMANDS=(containerd containerd-shim-runc-v2 runc ctr iptables conntrack socat umoci skopeo busybox nsenter unshare)
CNI_BIN_DIR=/usr/lib/cni

node_lock() {
  mkdir -p "$CACHE_ROOT"
  exec 8>"$NODE_LOCK"
  if ! flock -n 8; then
    log "waiting for another node-up/node-down to finish (lock $NODE_LOCK)"
    flock 8
  fi
}

node_log() { printf '%s/node-%s.log' "$LOG_DIR" "$1"; }

# Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers, named, unified).
cgroup_hierarchies() {
  local d
  for d in /sys/fs/cgroup/*/; do
    d="${d%/}"
    [ -L "$d" ] || [ ! -f "$d/cgroup.procs" ] || printf '%s\n' "$d"
  done
}

# Every pid of the node: its cgroup tree (the pids hierarchy holds all of them, or any other),
# and, should a process have left that tree, whatever runs in its network namespace and the
# API server forward on the host (a node-down that missed them would leave a node running on
# a cluster about to stop: CI saw the forward still holding the API server's port).
node_pids() {
  local h
  {
    while read -r h; do
      [ -d "$h/$NODE_CGROUP" ] || continue
      find "$h/$NODE_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
    done < <(cgroup_hierarchies)
    if netns_exists; then ip netns pids "$NODE_NETNS" 2>/dev/null || true; fi
    forward_pids
  } | sort -un
}

# The API server forward on the host (node-run.sh proxy: socat, a child per connection).
forward_pids() { pgrep -f -- "TCP-LISTEN:[0-9]+,bind=$NODE_HOST_IP," || true; }

# No grep -q in a pipe: its early exit can fail the writer with SIGPIPE (pipefail).
netns_exists() { ip netns list | awk -v ns="$NODE_NETNS" '$1 == ns {found = 1} END {exit !found}'; }

# kubectl against the local cluster (admin).
kctl() { "$BIN_DIR/kubectl" --kubeconfig="$CLUSTER_KUBECONFIG" "$@"; }

node_ready() {
  [ "$(kctl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# ctr against the node's containerd, in the namespace the kubelet's images live in.
node_ctr() { ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"; }
