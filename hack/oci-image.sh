#!/usr/bin/env bash
# Packs a root file system into a one-layer OCI image archive, without Docker or a registry
# (Debian's umoci and skopeo), or imports such an archive into the local node's containerd.
#
#   hack/oci-image.sh pack ROOTFS NAME:TAG OUT.tar [umoci config flags...]
#   hack/oci-image.sh load ARCHIVE.tar NAME:TAG
#
# pack: OUT.tar is an OCI archive (`skopeo copy oci-archive:OUT.tar ...` reads it) whose image
# config is set by the umoci config flags, e.g. --config.user 65532:65532
# --config.entrypoint /usr/local/bin/x --config.cmd run. load: imports it as NAME:TAG into
# the node's containerd (namespace k8s.io, where the kubelet looks).
set -euo pipefail
# shellcheck source=node-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pack() {
  local rootfs="$1" ref="$2" out="$3" tag="${2##*:}"
  shift 3
  [ -d "$rootfs" ] || die "no root file system at $rootfs"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  # umoci unpacks into bundle/rootfs; what is copied there becomes the one layer.
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  cp -a "$rootfs/." "$work/bundle/rootfs/"
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --no-history --image "$work/oci:$tag" "$@"
  umoci gc --layout "$work/oci"
  mkdir -p "$(dirname "$out")"
  rm -f "$out"
  skopeo --insecure-policy copy --quiet "oci:$work/oci:$tag" "oci-archive:$out:$ref"
}

load() {
  local archive="$1" ref="$2"
  [ -f "$archive" ] || die "no image archive at $archive"
  [ -S "$CONTAINERD_SOCKET" ] || die "the local node is not running (no $CONTAINERD_SOCKET): make node-up"
  # ctr names an imported image after a docker archive's RepoTags; an OCI archive's
  # ref.name annotation holds only the tag.
  skopeo --insecure-policy copy --quiet "oci-archive:$archive" "docker-archive:$work/image.tar:$ref"
  node_ctr images import "$work/image.tar" >/dev/null
  # The name the kubelet asks for: a first component without a dot is not a registry.
  local full="$ref"
  case "$ref" in
    */*) [[ "${ref%%/*}" == *.* ]] || full="docker.io/$ref" ;;
    *) full="docker.io/library/$ref" ;;
  esac
  # The list is read whole first: grep -q stops reading at the first match, and ctr, killed
  # by SIGPIPE, would then fail the pipeline (pipefail).
  local listed
  listed="$(node_ctr images ls -q)"
  grep -qxF "$full" <<<"$listed" || die "containerd does not list $full after the import"
  log "imported $ref into the node's containerd"
}

case "${1:-}" in
  pack)
    [ $# -ge 4 ] || usage
    shift
    pack "$@"
    ;;
  load)
    [ $# -eq 3 ] || usage
    load "$2" "$3"
    ;;
  *) usage ;;
esac
