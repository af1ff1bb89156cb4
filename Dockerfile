# syntax=docker/dockerfile:1
# Container image of azs-csp-operator: `make image` (docker build -t $(IMAGE) .).
# Not built on the project's own machines (they have no Docker); `make kind-e2e` builds and
# tests it on a machine that has Docker.
#
# The binary links glibc and libgcc_s (rustls with the ring provider compiles C and assembly
# against the target's libc), so the runtime is distroless "cc" (glibc, libgcc, CA
# certificates, no shell), not "static", which only suits a musl build.

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

# bookworm builder -> debian12 runtime: the same glibc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/azs-csp-operator /usr/local/bin/azs-csp-operator
# distroless "nonroot" is UID/GID 65532, as the chart's securityContext expects.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/azs-csp-operator"]
CMD ["run"]
