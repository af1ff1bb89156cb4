#!/usr/bin/env bash
# make bench [N=10000]: the operator at scale on the local control plane; see
# docs/benchmarks.md. Builds the release operator, starts the local cluster when none runs
# (and stops it afterwards, only if it started it), then runs benches/scale/, which creates
# and deletes its own namespaces and starts and stops its own operator process.
# More knobs: AZS_BENCH_* variables, listed in benches/scale/settings.rs (Settings::from_env).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

N="${1:-${N:-10000}}"
[[ "$N" =~ ^[0-9]+$ ]] || die "N must be a number of CustomerSubscriptions, got '$N'"

started=""
cleanup() {
  if [ -n "$started" ]; then
    "$HACK_DIR/cluster-down.sh" >"$CLUSTER_DIR/cluster-down.log" 2>&1 || log "cluster-down failed: see $CLUSTER_DIR/cluster-down.log"
  fi
}
trap cleanup EXIT

"$HACK_DIR/build-control-plane.sh"
if ! "$HACK_DIR/cluster-status.sh" >/dev/null 2>&1; then
  "$HACK_DIR/cluster-up.sh"
  started=1
fi

log "building the release operator"
cargo build --locked --release --bin azs-csp-operator
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
AZS_BENCH_N="$N" \
  AZS_BENCH_KUBECONFIG="$CLUSTER_DIR/kubeconfig" \
  AZS_BENCH_OPERATOR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/azs-csp-operator" \
  cargo bench --locked --bench scale
