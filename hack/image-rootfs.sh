#!/usr/bin/env bash
# Assembles the root file system of the operator's image in ROOTFS: the release binary, the
# shared libraries it links (glibc, libgcc_s) and the CA certificates, all from Debian's
# packages (`apt-get download` + `dpkg-deb -x`, no package manager in the image), the users
# root and nonroot (65532), an empty /tmp. No shell, no other program: distroless-like.
#
#   hack/image-rootfs.sh ROOTFS BINARY
#
# The one definition of the image's contents: `make image` (hack/image.sh, no Docker) and the
# Dockerfile (its rootfs stage runs this script on Debian bookworm) both use it. Needs
# apt-get with Debian bookworm's package lists (the binary is built against its glibc).
set -euo pipefail

PACKAGES=(libc6 libgcc-s1 ca-certificates)

[ $# -eq 2 ] || {
  sed -n '7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
rootfs="$1"
binary="$2"
[ -x "$binary" ] || {
  echo "image-rootfs: no executable at $binary" >&2
  exit 1
}
debs="$(mktemp -d)"
trap 'rm -rf "$debs"' EXIT

mkdir -p "$rootfs"
# apt-get download writes into the working directory; as root it warns that the download is
# not sandboxed, which is harmless here.
(cd "$debs" && { apt-get download -qq "${PACKAGES[@]}" 2>&1 | grep -v 'unsandboxed' >&2 || true; })
for p in "${PACKAGES[@]}"; do
  deb="$(find "$debs" -maxdepth 1 -name "${p}_*.deb" | head -n1)"
  [ -n "$deb" ] || {
    echo "image-rootfs: apt-get download $p failed" >&2
    exit 1
  }
  dpkg-deb -x "$deb" "$rootfs"
  # Which package versions went in, like a package database would say.
  printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$rootfs/.packages"
done

# The bundle update-ca-certificates would write (the package ships only the single files).
mkdir -p "$rootfs/etc/ssl/certs"
find "$rootfs/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z |
  xargs -0 cat >"$rootfs/etc/ssl/certs/ca-certificates.crt"

# What the binary never uses: character set converters, the loader's audit tools, the
# single certificates (bundled above) and the tool that bundles them, documentation (the
# copyright files stay), lintian overrides.
rm -rf "$rootfs"/usr/lib/x86_64-linux-gnu/gconv "$rootfs"/lib/x86_64-linux-gnu/gconv \
  "$rootfs"/usr/lib/x86_64-linux-gnu/audit "$rootfs"/lib/x86_64-linux-gnu/audit \
  "$rootfs"/usr/share/ca-certificates "$rootfs"/usr/sbin "$rootfs"/etc/ca-certificates \
  "$rootfs"/usr/share/lintian "$rootfs"/usr/share/man "$rootfs"/usr/share/doc/*/examples
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
find "$rootfs/usr/share/doc" -depth -mindepth 1 -type d -empty -delete

printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' \
  >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"
mkdir -p "$rootfs/tmp" "$rootfs/home/nonroot" "$rootfs/root"
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/home/nonroot"
chmod 0700 "$rootfs/root"

install -D -m 0755 "$binary" "$rootfs/usr/local/bin/azs-csp-operator"
