#!/usr/bin/env bash
# Builds the operator's container image without Docker or a registry: the release binary in
# the root file system of hack/image-rootfs.sh, packed by hack/oci-image.sh into an OCI
# archive, with the image config (user, entrypoint, command, ports) read from the
# Dockerfile's final stage, so that `docker build` and this script make the same image.
#
#   hack/image.sh build   # -> $IMAGE_ARCHIVE (prints its path and size)
#   hack/image.sh load    # imports $IMAGE_ARCHIVE into the local node's containerd as $IMAGE
#   hack/image.sh check   # the Dockerfile and this script agree (no build)
#
# Environment: IMAGE (default azs-csp-operator:dev), IMAGE_ARCHIVE (default
# <target dir>/image/azs-csp-operator.oci.tar), CARGO_TARGET_DIR.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE="${IMAGE:-azs-csp-operator:dev}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
IMAGE_ARCHIVE="${IMAGE_ARCHIVE:-$TARGET_DIR/image/azs-csp-operator.oci.tar}"
DOCKERFILE="$REPO_ROOT/Dockerfile"

# The final stage's USER, ENTRYPOINT, CMD and EXPOSE as umoci config flags, one per line.
dockerfile_config() {
  python3 - "$DOCKERFILE" <<'EOF'
import json, sys
lines, cont = [], ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if line.lstrip().startswith("#"):
        continue
    if line.endswith("\\"):
        cont += line[:-1] + " "
        continue
    lines.append(cont + line)
    cont = ""
stage = []
for line in lines:
    words = line.split(None, 1)
    if not words:
        continue
    if words[0].upper() == "FROM":
        stage = []
    stage.append((words[0].upper(), words[1] if len(words) > 1 else ""))
flags = []
for op, arg in stage:
    if op == "USER":
        flags += ["--config.user", arg.strip()]
    elif op in ("ENTRYPOINT", "CMD"):
        for word in json.loads(arg):
            flags += ["--config." + op.lower(), word]
    elif op == "EXPOSE":
        for port in arg.split():
            flags += ["--config.exposedports", port if "/" in port else port + "/tcp"]
    elif op == "ENV":
        key, _, value = arg.partition("=")
        flags += ["--config.env", key.strip() + "=" + value.strip().strip('"')]
    elif op == "WORKDIR":
        flags += ["--config.workingdir", arg.strip()]
for f in flags:
    print(f)
EOF
}

# The Dockerfile must build its runtime from this project's rootfs script, FROM scratch, or
# the two images would differ.
check() {
  grep -q 'hack/image-rootfs.sh' "$DOCKERFILE" || die "the Dockerfile does not build its root file system with hack/image-rootfs.sh"
  [ "$(grep -E '^FROM ' "$DOCKERFILE" | tail -n1 | awk '{print $2}')" = scratch ] ||
    die "the Dockerfile's final stage is not FROM scratch plus the rootfs of hack/image-rootfs.sh"
  local config
  config="$(dockerfile_config)"
  grep -qx -- '--config.user' <<<"$config" || die "the Dockerfile's final stage sets no USER"
  grep -qx -- '--config.entrypoint' <<<"$config" || die "the Dockerfile's final stage sets no ENTRYPOINT"
}

build() {
  check
  command -v cargo >/dev/null || die "cargo is required"
  local c
  for c in umoci skopeo apt-get dpkg-deb; do
    command -v "$c" >/dev/null || die "$c is required (Debian: apt-get install umoci skopeo)"
  done
  log "building the release binary"
  (cd "$REPO_ROOT" && cargo build --release --locked --bin azs-csp-operator)
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" EXIT
  "$HACK_DIR/image-rootfs.sh" "$work/rootfs" "$TARGET_DIR/release/azs-csp-operator"
  local flags=()
  mapfile -t flags < <(dockerfile_config)
  "$HACK_DIR/oci-image.sh" pack "$work/rootfs" "$IMAGE" "$IMAGE_ARCHIVE" "${flags[@]}"
  log "image $IMAGE: $IMAGE_ARCHIVE ($(du -h "$IMAGE_ARCHIVE" | cut -f1); unpacked $(du -sh "$work/rootfs" | cut -f1))"
  printf '%s\n' "$IMAGE_ARCHIVE"
}

case "${1:-}" in
  build) build ;;
  load) "$HACK_DIR/oci-image.sh" load "$IMAGE_ARCHIVE" "$IMAGE" ;;
  check)
    check
    log "the Dockerfile and hack/image.sh build the same image"
    ;;
  *)
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
