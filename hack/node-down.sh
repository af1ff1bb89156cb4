#!/usr/bin/env bash
# Stops the local node (node-up.sh) and removes every trace of it on the host: its processes
# (pods included: TERM, then KILL), its cgroups, its network namespace and veth pair, its
# Node object, and $NODE_DIR (containerd's store). The logs are kept. A no-op when no node
# runs. The cluster itself keeps running (make cluster-down stops it).
# --locked: the caller (node-up) already holds the node lock.
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

[ "${1:-}" = --locked ] || node_lock

owner="$(cat "$NODE_OWNER" 2>/dev/null || true)"
if [ -n "$owner" ] && [ "$owner" != "$NODE_DIR" ] && netns_exists; then
  die "the node on this machine serves $owner, not this worktree: run make node-down there"
fi

stop_node_processes() {
  local signal i pids
  for signal in TERM KILL; do
    for ((i = 0; i < STOP_GRACE_SECONDS * 10; i++)); do
      pids="$(node_pids)"
      [ -n "$pids" ] || return 0
      # shellcheck disable=SC2086  # one pid per word
      kill "-$signal" $pids 2>/dev/null || true
      sleep 0.1
    done
  done
  die "processes of the node survived KILL: $(node_pids | tr '\n' ' ')"
}

# A killed process leaves its cgroup at once but stays in the process table until reaped:
# wait (briefly) until none of the node's programs is listed, so the host looks as before.
wait_reaped() {
  local i p left
  for ((i = 0; i < 50; i++)); do
    left=""
    for p in containerd containerd-shim kubelet kube-proxy kube-scheduler pause socat; do
      if pgrep -x "$p" >/dev/null; then left="$p"; fi
    done
    [ -n "$left" ] || return 0
    sleep 0.1
  done
}

running="$(node_pids)"
[ -n "$running" ] && log "stopping the node's processes"
stop_node_processes
[ -n "$running" ] && wait_reaped

# Depth first: a cgroup goes once it has no children and no processes.
while read -r h; do
  [ -d "$h/$NODE_CGROUP" ] || continue
  find "$h/$NODE_CGROUP" -depth -type d -exec rmdir {} +
done < <(cgroup_hierarchies)

if netns_exists; then
  ip netns delete "$NODE_NETNS"
fi
# What `ip netns add` made for the first named namespace on this host, unless another one
# has appeared there since.
if [ -f "$NODE_DIR/made-run-netns" ] && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
  if mountpoint -q /run/netns; then umount /run/netns; fi
  rmdir /run/netns
fi
# Deleting the namespace deletes the veth pair (and the pod route with it); a half-made
# pair may still be on the host. The kernel removes the pair asynchronously: wait for it.
ip link delete "$NODE_HOST_LINK" 2>/dev/null || true
for ((i = 0; i < 50; i++)); do
  ip link show "$NODE_HOST_LINK" >/dev/null 2>&1 || break
  sleep 0.1
done
if ip link show "$NODE_HOST_LINK" >/dev/null 2>&1; then die "the link $NODE_HOST_LINK is still on the host"; fi

# The Node object, when the cluster still runs (a later node-up registers it afresh).
if cluster_healthy && kctl get node "$NODE_NAME" >/dev/null 2>&1; then
  kctl delete node "$NODE_NAME" --wait=true --timeout=30s >/dev/null
fi

rm -rf "$NODE_DIR"
rm -f "$NODE_OWNER"
if [ -n "$running" ]; then
  log "node stopped (logs kept in $LOG_DIR/node-*.log)"
fi
