#!/usr/bin/env bash
# Installs the chart linters into versioned directories of the cache, beside the control
# plane binaries (never into the repository, never globally):
#   kubeconform  go install (Go module proxy)   $CACHE_ROOT/kubeconform-<version>/bin/kubeconform
#   checkov      pip into a venv (PyPI)         $CACHE_ROOT/checkov-<version>/venv/bin/checkov
# Usage: hack/tools.sh [install]          install both (no-op when cached)
#        hack/tools.sh path TOOL          print TOOL's path, installing it first when missing
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECONFORM_VERSION=v0.8.0
CHECKOV_VERSION=3.3.30

KUBECONFORM_DIR="$CACHE_ROOT/kubeconform-$KUBECONFORM_VERSION"
CHECKOV_DIR="$CACHE_ROOT/checkov-$CHECKOV_VERSION"
KUBECONFORM="$KUBECONFORM_DIR/bin/kubeconform"
CHECKOV="$CHECKOV_DIR/venv/bin/checkov"

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
  rm -rf "$KUBECONFORM_DIR/bin"
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

case "${1:-install}" in
  install)
    tools_lock
    install_kubeconform
    install_checkov
    log "kubeconform: $KUBECONFORM"
    log "checkov:     $CHECKOV"
    ;;
  path)
    tools_lock
    case "${2:-}" in
      kubeconform) install_kubeconform && printf '%s\n' "$KUBECONFORM" ;;
      checkov) install_checkov && printf '%s\n' "$CHECKOV" ;;
      *) die "usage: $0 path kubeconform|checkov" ;;
    esac
    ;;
  *) die "usage: $0 [install] | path kubeconform|checkov" ;;
esac
