#!/usr/bin/env bash
# Prints the directory of the cached control plane binaries (kube-apiserver,
# kube-controller-manager, kubectl, etcd, helm), e.g. PATH="$(hack/bin-dir.sh):$PATH".
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
printf '%s\n' "$BIN_DIR"
