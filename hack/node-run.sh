#!/usr/bin/env bash
# The processes of the local node; started by node-up.sh, never by hand.
#
#   node-run.sh node   inside the node's network namespace and a fresh mount namespace
#                      (node-up runs it under nsenter + unshare): private mounts, then
#                      containerd, the pause image, kubelet, kube-proxy, kube-scheduler
#   node-run.sh proxy  in the host's namespaces: forwards $NODE_HOST_IP:<API server port>
#                      to the API server on loopback (the kubelet and the pods' `kubernetes`
#                      Service endpoint connect there)
#
# Both join the node's cgroup first, so every process they start is found by node-down.
# Returns (and node-down's TERM stops everything) when one of the daemons exits.
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

join_node_cgroup() {
  local h
  while read -r h; do
    echo "$$" >"$h/$NODE_CGROUP/cgroup.procs"
  done < <(cgroup_hierarchies)
}

# The kernel tunables the kubelet sets unless they already have its values (vm.overcommit_memory
# and friends are global, not per namespace): the kubelet reads these files instead, so the
# host's values never change.
mask_kernel_tunables() {
  local dir="$NODE_DIR/sysctl" key value
  mkdir -p "$dir"
  while read -r key value; do
    printf '%s\n' "$value" >"$dir/${key//\//.}"
    mount --bind "$dir/${key//\//.}" "/proc/sys/$key"
  done <<'EOF'
vm/overcommit_memory 1
vm/panic_on_oom 0
kernel/panic 10
kernel/panic_on_oops 1
kernel/keys/root_maxkeys 1000000
kernel/keys/root_maxbytes 25000000
EOF
}

# start NAME COMMAND...: a daemon of the node, output to its node-NAME.log.
pids=()
start() {
  local name="$1"
  shift
  "$@" </dev/null >"$(node_log "$name")" 2>&1 &
  pids+=($!)
  printf '%s\n' "$!" >"$NODE_DIR/$name.pid"
}

# Waits until containerd (the daemon started last) serves its socket.
wait_for_containerd() {
  local deadline=$((SECONDS + 60)) pid="${pids[-1]}"
  until node_ctr version >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "containerd exited (log: $(node_log containerd))"
    [ "$SECONDS" -lt "$deadline" ] || die "containerd does not serve after 60s (log: $(node_log containerd))"
    sleep 0.2
  done
}

run_node() {
  # A fresh mount namespace still shares the host's mounts: make this one private first.
  mount --make-rprivate /
  local d
  for d in /run /var/lib /var/log /tmp; do
    mount -t tmpfs -o mode=0755 "node-$(basename "$d")" "$d"
  done
  chmod 1777 /tmp
  mask_kernel_tunables
  # containerd gives a pod without DNS settings a copy of /etc/resolv.conf: no servers.
  [ -e /etc/resolv.conf ] && mount --bind "$NODE_DIR/resolv.conf" /etc/resolv.conf
  ip link set lo up

  start containerd containerd --config "$NODE_DIR/containerd.toml"
  wait_for_containerd
  node_ctr images import "$NODE_DIR/pause.tar" >/dev/null

  start kubelet "$BIN_DIR/kubelet" \
    --config="$NODE_DIR/kubelet.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --v=1
  start kube-proxy "$BIN_DIR/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
  start kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig="$NODE_DIR/admin.kubeconfig" \
    --authentication-kubeconfig="$NODE_DIR/admin.kubeconfig" \
    --authorization-kubeconfig="$NODE_DIR/admin.kubeconfig" \
    --bind-address=127.0.0.1 \
    --leader-elect=false
  log "node processes started: ${pids[*]}"
  wait -n
  log "a node process exited; stopping the others"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
}

run_proxy() {
  load_cluster_env || die "no local cluster ($CLUSTER_ENV missing)"
  exec socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$APISERVER_PORT"
}

join_node_cgroup
case "${1:-}" in
  node) run_node ;;
  proxy) run_proxy ;;
  *) die "usage: node-run.sh node|proxy" ;;
esac
