#!/usr/bin/env bash
# make node-safety: tests the local node's two rules (DESIGN.md §11).
#  1. No packet leaves the machine: a pod reaches the API server through the `kubernetes`
#     Service (the check can succeed), but no address outside the node: not the host's
#     gateway, not a public address, not the host's own external address; it has no DNS
#     server to ask; and the node's namespace has no default route.
#  2. node-down leaves the host exactly as node-up found it: sysctls, iptables/nft rules,
#     links, addresses, routes, network namespaces, mounts, cgroups, listening sockets and
#     the files a kubelet node would touch are snapshotted before node-up and compared
#     after node-down; even a node process that left the node's cgroup is stopped.
#  3. cluster-down stops a node that runs on the cluster before the control plane: no node
#     process and no port of the cluster is left.
# Needs root; starts the cluster (NODE=1) when it is not running and stops it at the end; the
# node must not be running. Prints node-up's seconds.
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

netns_exists && die "the node is running: make node-down first (this test starts its own)"
NODE=1 "$HACK_DIR/cluster-up.sh" >/dev/null
"$HACK_DIR/build-control-plane.sh" --node

work="$(mktemp -d)"
node_started=""
cleanup() {
  [ -n "$node_started" ] && "$HACK_DIR/node-down.sh" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# What a node could change on the host, one file per aspect.
snapshot() {
  local d="$1" p
  mkdir -p "$d"
  # Counters and other values that move by themselves.
  sysctl -a 2>/dev/null |
    grep -vE '^(kernel\.random\.|fs\.(dentry-state|file-nr|inode-nr|inode-state|aio-nr|quota\.)|kernel\.(ns_last_pid|pty\.nr|perf_event_max_sample_rate|sched_)|net\.netfilter\.nf_conntrack_count|vm\.stat)' \
      >"$d/sysctl"
  { iptables-save 2>&1 || true; } | sed '/^#/d; s/\[[0-9]*:[0-9]*\]//' >"$d/iptables"
  { ip6tables-save 2>&1 || true; } | sed '/^#/d; s/\[[0-9]*:[0-9]*\]//' >"$d/ip6tables"
  { nft list ruleset 2>&1 || true; } >"$d/nft"
  ip -o link show | sed 's/^[0-9]*: //' >"$d/links"
  ip -o addr show | sed 's/^[0-9]*: //' >"$d/addresses"
  { ip route show table all; ip -6 route show table all; ip rule show; } >"$d/routes"
  ip netns list >"$d/netns"
  awk '{print $5, $(NF-2), $(NF-1)}' /proc/self/mountinfo | sort >"$d/mounts"
  find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d | sort >"$d/cgroups"
  # Other helpers' processes listen on loopback only; anything else is ours.
  ss -Hltnu | awk '$5 !~ /^(127\.|\[::1\]|\[::ffff:127\.)/ {print $1, $5}' | sort >"$d/listening"
  for p in /var/lib/kubelet /var/lib/cni /var/lib/containerd /var/log/containers /var/log/pods \
    /run/containerd /run/netns /run/xtables.lock /etc/cni /opt/cni /opt/containerd /etc/kubernetes; do
    if [ -e "$p" ]; then
      find "$p" -maxdepth 2 -printf "%p %y %m\n" 2>/dev/null | sort
    else
      echo "$p absent"
    fi
  done >"$d/files"
  for p in containerd containerd-shim kubelet kube-proxy kube-scheduler pause socat; do
    pgrep -x "$p" >/dev/null && echo "$p running"
  done >"$d/processes" || true
}

log "snapshot of the host before node-up"
snapshot "$work/before"

t0=$SECONDS
node_started=1
"$HACK_DIR/node-up.sh"
log "node-up took $((SECONDS - t0))s"
# The snapshot sees a running node (so that an equal one after node-down means something).
snapshot "$work/during"
for aspect in links netns cgroups listening; do
  if cmp -s "$work/before/$aspect" "$work/during/$aspect"; then
    die "the snapshot's $aspect do not show the running node: the comparison would prove nothing"
  fi
done

# --- 1. no packet leaves the machine ---
log "egress: a pod tries the API server and addresses outside the node"
gateway="$(ip -4 route show default | awk '{print $3; exit}')"
external="$(ip -4 -o addr show scope global | awk '$2 != "'"$NODE_HOST_LINK"'" {sub("/.*", "", $4); print $4; exit}')"
targets=(1.1.1.1 "${gateway:-192.0.2.1}" "${external:-198.51.100.1}")

busybox_archive="$TOOLS_DIR/images/busybox.tar"
busybox_image=azs-csp-local/busybox:node-safety
if [ ! -s "$busybox_archive" ]; then
  mkdir -p "$work/busybox/bin"
  cp "$(command -v busybox)" "$work/busybox/bin/busybox"
  for tool in sh nc wget nslookup cat ip route; do ln -s busybox "$work/busybox/bin/$tool"; done
  "$HACK_DIR/oci-image.sh" pack "$work/busybox" "$busybox_image" "$busybox_archive" \
    --config.entrypoint /bin/sh --config.user 65532:65532
fi
"$HACK_DIR/oci-image.sh" load "$busybox_archive" "$busybox_image"

probe_ns="node-safety-$$"
kctl create namespace "$probe_ns" >/dev/null
# Each line: NAME=ok or NAME=failed. nc -w: give up after 3 s (no route fails at once).
# shellcheck disable=SC2016  # expanded by the pod's shell
script='
try() { if nc -w 3 "$2" "$3" </dev/null >/dev/null 2>&1; then echo "$1=ok"; else echo "$1=failed"; fi; }
try api 10.96.0.1 443
'
for t in "${targets[@]}"; do script+="try out-$t $t 443"$'\n'; done
script+='if grep -q "^nameserver" /etc/resolv.conf; then echo dns=configured; cat /etc/resolv.conf; else echo dns=none; fi
echo routes; ip route
'
kctl -n "$probe_ns" run egress --image="$busybox_image" --image-pull-policy=Never --restart=Never \
  --command -- sh -c "$script" >/dev/null
if ! kctl -n "$probe_ns" wait pod/egress --for=jsonpath='{.status.phase}'=Succeeded --timeout=90s >/dev/null; then
  kctl -n "$probe_ns" describe pod egress >&2 || true
  die "the egress probe pod did not complete (kubelet log: $(node_log kubelet))"
fi
result="$(kctl -n "$probe_ns" logs egress)"
kctl delete namespace "$probe_ns" --wait=false >/dev/null
printf '%s\n' "$result" | sed 's/^/    /' >&2
failures=0
grep -qx 'api=ok' <<<"$result" || {
  log "FAIL: the pod cannot reach the API server through the kubernetes Service"
  failures=$((failures + 1))
}
for t in "${targets[@]}"; do
  grep -qx "out-$t=failed" <<<"$result" || {
    log "FAIL: the pod reached $t, outside the node"
    failures=$((failures + 1))
  }
done
grep -qx 'dns=none' <<<"$result" || {
  log "FAIL: the pod has a DNS server configured"
  failures=$((failures + 1))
}
if [ -n "$(ip -n "$NODE_NETNS" route show default)" ]; then
  log "FAIL: the node's namespace has a default route"
  failures=$((failures + 1))
fi
for t in "${targets[@]}"; do
  if ip -n "$NODE_NETNS" route get "$t" >/dev/null 2>&1; then
    log "FAIL: the node's namespace has a route to $t"
    failures=$((failures + 1))
  fi
done
[ "$failures" -eq 0 ] && log "egress: pods reach the API server and nothing outside the node"

# --- 2. node-down restores the host ---
# Even a node process outside the node's cgroup (CI once saw the API server forward outlive
# the node) goes: the forward is moved to each hierarchy's root first.
forward="$(forward_pids | head -n 1 || true)"
[ -n "$forward" ] || die "the node's API server forward is not running"
while read -r h; do echo "$forward" >"$h/cgroup.procs"; done < <(cgroup_hierarchies)
"$HACK_DIR/node-down.sh"
node_started=""
snapshot "$work/after"
if ! diff -r -u "$work/before" "$work/after" >"$work/diff"; then
  log "FAIL: the host differs after node-down:"
  sed 's/^/    /' "$work/diff" >&2
  failures=$((failures + 1))
else
  log "host unchanged after node-down: $(cat "$work"/before/* | wc -l) lines of state compared"
fi

# --- 3. cluster-down stops the node first ---
node_started=1
"$HACK_DIR/node-up.sh" >/dev/null
"$HACK_DIR/cluster-down.sh"
node_started=""
if [ -n "$(node_pids)" ] || netns_exists; then
  log "FAIL: cluster-down left the node running: $(node_pids | tr '\n' ' ')"
  failures=$((failures + 1))
else
  log "cluster-down stopped the node, then the cluster"
fi
[ "$failures" -eq 0 ] || die "$failures node safety check(s) failed"
log "node safety: passed"
