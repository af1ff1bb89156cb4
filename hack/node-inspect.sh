#!/usr/bin/env bash
# Prints what a container of the local node really runs as, seen from the host's /proc:
#   hack/node-inspect.sh CONTAINER_ID   ->   uid=65532 gid=65532 root=ro
# (CONTAINER_ID as in a pod's status.containerStatuses[].containerID, with or without the
# containerd:// prefix). The e2e suite's E2E_INSPECT hook on the local node.
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

id="${1:?usage: node-inspect.sh CONTAINER_ID}"
id="${id#containerd://}"
pid="$(node_ctr tasks ls | awk -v id="$id" '$1 == id {print $2}')"
if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then die "no running task $id in the node's containerd"; fi
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
gid="$(awk '/^Gid:/ {print $2}' "/proc/$pid/status")"
# mountinfo: field 5 is the mount point, field 6 the per-mount options (ro/rw first).
root="$(awk '$5 == "/" {split($6, o, ","); print o[1]}' "/proc/$pid/mountinfo" | tail -n1)"
printf 'uid=%s gid=%s root=%s\n' "$uid" "$gid" "$root"
