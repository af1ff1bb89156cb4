# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts
# Shared paths for the hack/ scripts. Sourced, not executed.
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
. "$HACK_DIR/versions.env"
CACHE_ROOT="${AZS_CSP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/azs-csp-operator}"
TOOLS_DIR="$CACHE_ROOT/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
BIN_DIR="$TOOLS_DIR/bin"
CLUSTER_DIR="${AZS_CSP_CLUSTER_DIR:-$REPO_ROOT/.cluster}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
