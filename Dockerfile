# syntax=docker/dockerfile:1
# Container image of azs-csp-operator for users with Docker: `docker build -t azs-csp-operator .`
# The project's own machines have no Docker: there `make image` (hack/image.sh) builds the
# same image as an OCI archive with umoci and skopeo.
#
# The two stay in step by construction: both assemble the root file system with
# hack/image-rootfs.sh (glibc, libgcc_s and the CA certificates from Debian bookworm's
# packages, the users root and nonroot, no shell), and hack/image.sh reads the image config
# (USER, ENTRYPOINT, CMD, EXPOSE) from this file's final stage. `hack/image.sh check` (run by
# `make image`) fails when this file stops building its runtime that way.
#
# The binary links glibc and libgcc_s (rustls with the ring provider compiles C and assembly
# against the target's libc), so the runtime carries those libraries, not a static binary.

ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cargo registry and target dir are BuildKit caches: rebuilds fetch and compile only
# what changed. The binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin azs-csp-operator \
    && install -D -m 0755 target/release/azs-csp-operator /out/azs-csp-operator

# bookworm builder -> bookworm libraries: the same glibc.
FROM docker.io/library/debian:bookworm-slim AS rootfs
COPY hack/image-rootfs.sh /image-rootfs.sh
COPY --from=build /out/azs-csp-operator /out/azs-csp-operator
RUN apt-get update -qq && /image-rootfs.sh /rootfs /out/azs-csp-operator

FROM scratch
COPY --from=rootfs /rootfs /
# nonroot is UID/GID 65532, as the chart's securityContext expects.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/azs-csp-operator"]
CMD ["run"]
