#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd and helm from their Go
# modules into a versioned cache outside the repository. Does nothing when they are there.
# With --node it also builds what the local node needs (DESIGN.md §11): kubelet,
# kube-scheduler, kube-proxy and the pause binary of the sandbox image (`gcc -static` of the
# pause.c that ships in the k8s.io/kubernetes module).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

want=(kube-apiserver kube-controller-manager kubectl etcd helm)
node_binaries=(kubelet kube-scheduler kube-proxy)
if [ "${1:-}" = --node ]; then
  want+=("${node_binaries[@]}" pause)
fi
missing=()
for b in "${want[@]}"; do [ -x "$BIN_DIR/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  log "control plane binaries cached in $BIN_DIR"
  exit 0
fi
command -v go >/dev/null || die "Go is required to build the control plane (see README prerequisites)"
mkdir -p "$BIN_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

# locked NAME COMMAND...: COMMAND builds $BIN_DIR/NAME, unless it is there once the binary's
# lock is held. Two runs at once (CI builds the node's binaries in the background while the
# tests want the API server) then build each binary once: the second waits for the first.
locked() {
  local name="$1" fd
  shift
  exec {fd}>"$BIN_DIR/.$name.lock"
  flock "$fd"
  [ -x "$BIN_DIR/$name" ] || "$@"
  exec {fd}>&-
}

k8s_minor="${KUBERNETES_VERSION#v1.}"          # 36.3
staging_version="v0.${k8s_minor}"               # v0.36.3
major_minor="${KUBERNETES_VERSION%.*}"          # v1.36

build_kubernetes_binary() {
  local mod="$1" ld="$2" b="$3"
  log "building $b $KUBERNETES_VERSION (first run only; takes several minutes)"
  # Built outside $BIN_DIR and moved in: a reader never sees half a binary.
  (cd "$mod" && go build -ldflags "$ld" -o "$work/$b" "k8s.io/kubernetes/cmd/$b")
  mv "$work/$b" "$BIN_DIR/$b"
}

build_kubernetes() {
  local mod="$work/kubernetes"
  mkdir -p "$mod"
  go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" >"$work/k8s.json"
  local gomod
  gomod="$(jq -r .GoMod "$work/k8s.json")"
  {
    echo "module azs-csp-operator.local/controlplane"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    # Every staging module k8s.io/kubernetes replaces with ./staging/... is published as v0.<minor>.<patch>.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } >"$mod/go.mod"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${k8s_minor%%.*}"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
  local b
  for b in "${want[@]}"; do
    case "$b" in kube-* | kubectl | kubelet) ;; *) continue ;; esac
    [ -x "$BIN_DIR/$b" ] && continue
    locked "$b" build_kubernetes_binary "$mod" "$ld" "$b"
  done
  : "$major_minor"
}

# The sandbox ("pause") image's binary, from the source in the k8s.io/kubernetes module.
build_pause() {
  command -v gcc >/dev/null || die "gcc is required to build the pause binary of the local node"
  local src
  src="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | jq -r .Dir)/build/pause/linux/pause.c"
  log "building pause from $src"
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$work/pause" "$src"
  strip "$work/pause"
  mv "$work/pause" "$BIN_DIR/pause"
}

build_etcd() {
  local mod="$work/etcd"
  mkdir -p "$mod"
  # etcd's own go.mod has replace directives, so `go install` refuses it: build from a wrapper.
  printf 'module azs-csp-operator.local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$mod/go.mod"
  log "building etcd $ETCD_VERSION"
  (cd "$mod" && go build -ldflags "-s -w" -o "$work/etcd.bin" go.etcd.io/etcd/server/v3)
  mv "$work/etcd.bin" "$BIN_DIR/etcd"
}

build_helm() {
  local mod="$work/helm"
  mkdir -p "$mod"
  printf 'module azs-csp-operator.local/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION" >"$mod/go.mod"
  log "building helm $HELM_VERSION"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  (cd "$mod" && go build -ldflags "$ld" -o "$work/helm.bin" helm.sh/helm/v3/cmd/helm)
  mv "$work/helm.bin" "$BIN_DIR/helm"
}

[ -x "$BIN_DIR/etcd" ] || locked etcd build_etcd
[ -x "$BIN_DIR/helm" ] || locked helm build_helm
build_kubernetes
if [[ " ${want[*]} " == *" pause "* ]] && [ ! -x "$BIN_DIR/pause" ]; then locked pause build_pause; fi
log "control plane binaries ready in $BIN_DIR"
