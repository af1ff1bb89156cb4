#!/usr/bin/env bash
# Installs the chart linters into versioned directories of the cache, beside the control
# plane binaries (never into the repository, never globally):
#   kubeconform  go install (Go module proxy)   $CACHE_ROOT/kubeconform-<version>/bin/kubeconform
#   checkov      pip into a venv (PyPI)         $CACHE_ROOT/checkov-<version>/venv/bin/checkov
#   helm4        go build (Go module proxy)     $CACHE_ROOT/helm-<v4 version>/bin/helm
#                (the chart must work with Helm 3, the cluster's helm, and Helm 4)
# Usage: hack/tools.sh [install]          install both (no-op when cached)
#        hack/tools.sh path TOOL          print TOOL's path (kubeconform, checkov, helm4),
#                                         installing it first when missing
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECONFORM_VERSION=v0.8.0
CHECKOV_VERSION=3.3.30
HELM4_VERSION=v4.3.1

KUBECONFORM_DIR="$CACHE_ROOT/kubeconform-$KUBECONFORM_VERSION"
CHECKOV_DIR="$CACHE_ROOT/checkov-$CHECKOV_VERSION"
KUBECONFORM="$KUBECONFORM_DIR/bin/kubeconform"
CHECKOV="$CHECKOV_DIR/venv/bin/checkov"
HELM4_DIR="$CACHE_ROOT/helm-$HELM4_VERSION"
HELM4="$HELM4_DIR/bin/helm"

# Parallel test runs may ask at once: one installer at a time.
tools_lock() {
  mkdir -p "$CACHE_ROOT"
  exec 8>"$CACHE_ROOT/.tools.lock"
  flock 8
}

install_kubeconform() {
  [ -x "$KUBECONFORM" ] && return 0
  command -v go >/dev/null || die "Go is required to install kubeconform"
  log "installing kubeconform $KUBECONFORM_VERSION into $KUBECONFORM_DIR"
  mkdir -p "$KUBECONFORM_DIR"
  GOBIN="$KUBECONFORM_DIR/bin.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go install -ldflags "-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" >&2
  rm -rf "${KUBECONFORM_DIR:?}/bin"
  mv "$KUBECONFORM_DIR/bin.tmp" "$KUBECONFORM_DIR/bin"
}

install_checkov() {
  # The venv's scripts embed its path, so it is built in place; a marker says it is complete.
  [ -x "$CHECKOV" ] && [ -f "$CHECKOV_DIR/.installed" ] && return 0
  local python="${PYTHON:-python3}"
  command -v "$python" >/dev/null || die "python3 is required to install checkov"
  log "installing checkov $CHECKOV_VERSION into $CHECKOV_DIR (pip, first run only; takes a few minutes)"
  rm -rf "$CHECKOV_DIR"
  mkdir -p "$CHECKOV_DIR"
  "$python" -m venv "$CHECKOV_DIR/venv"
  if ! "$CHECKOV_DIR/venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2; then
    rm -rf "$CHECKOV_DIR"
    die "pip install checkov==$CHECKOV_VERSION failed"
  fi
  "$CHECKOV" --version >/dev/null || { rm -rf "$CHECKOV_DIR"; die "checkov does not start"; }
  touch "$CHECKOV_DIR/.installed"
}

install_helm4() {
  [ -x "$HELM4" ] && return 0
  command -v go >/dev/null || die "Go is required to build helm $HELM4_VERSION"
  log "building helm $HELM4_VERSION into $HELM4_DIR (first run only)"
  local mod
  mod="$(mktemp -d)"
  printf 'module azs-csp-operator.local/helm4\n\ngo 1.26.0\n\nrequire helm.sh/helm/v4 %s\n' "$HELM4_VERSION" >"$mod/go.mod"
  mkdir -p "$HELM4_DIR/bin"
  (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION" \
    -o "$HELM4.tmp" helm.sh/helm/v4/cmd/helm) >&2 || { rm -rf "$mod" "$HELM4.tmp"; die "building helm $HELM4_VERSION failed"; }
  rm -rf "$mod"
  mv "$HELM4.tmp" "$HELM4"
}

case "${1:-install}" in
  install)
    tools_lock
    install_kubeconform
    install_checkov
    install_helm4
    log "kubeconform: $KUBECONFORM"
    log "checkov:     $CHECKOV"
    log "helm 4:      $HELM4"
    ;;
  path)
    tools_lock
    case "${2:-}" in
      kubeconform) install_kubeconform && printf '%s\n' "$KUBECONFORM" ;;
      checkov) install_checkov && printf '%s\n' "$CHECKOV" ;;
      helm4) install_helm4 && printf '%s\n' "$HELM4" ;;
      *) die "usage: $0 path kubeconform|checkov|helm4" ;;
    esac
    ;;
  *) die "usage: $0 [install] | path kubeconform|checkov|helm4" ;;
esac
