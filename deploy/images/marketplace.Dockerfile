# The `marketplace` image: the one static `marketplace` binary on an empty
# base (no shell, no libc, no package manager), run as a non-root user.
# Build it from the repository root:
#
#   docker build -f deploy/images/marketplace.Dockerfile -t ghcr.io/marketplace/marketplace:dev .
#
# Stages:
#   build     compiles the static binary in the official Rust image. BuildKit
#             cache mounts keep the crate registry and the target directory
#             from one build to the next, so a source change recompiles the
#             workspace crates only.
#   prebuilt  takes a static binary built outside from the build context
#             instead (`cargo xtask images` does, and so can Tilt):
#             `--build-arg BINARY_SOURCE=prebuilt`, and `--build-arg
#             BINARY=<path in the context>` when it is not at the default.
#             The build stage is then skipped and nothing is pulled.
#   runtime   the image, the last stage and so the default target.

ARG RUST_VERSION=1.95.0
ARG BINARY_SOURCE=build

FROM docker.io/library/rust:${RUST_VERSION}-slim-trixie AS build
WORKDIR /src
# rust-toolchain.toml stays out of the context (.dockerignore): the image's
# toolchain is that version already (a test keeps RUST_VERSION equal to its
# channel), and rustup would download the rustfmt and clippy it lists.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY proto proto
COPY crates crates
COPY operator operator
COPY xtask xtask
# glibc linked statically (`+crt-static`) for the platform's own target, so
# build scripts and proc-macros stay dynamic. The binary is copied out of
# the cache mount, which is not part of any layer.
RUN --mount=type=cache,id=marketplace-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=marketplace-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=marketplace-target,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --locked --profile image --target "$target" -p marketplace \
    && cp "target/$target/image/marketplace" /marketplace

FROM scratch AS prebuilt
ARG BINARY=target/images/marketplace
COPY ${BINARY} /marketplace

FROM ${BINARY_SOURCE} AS binary

FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="marketplace" \
      org.opencontainers.image.description="Kubernetes-native e-commerce backend: GraphQL gateway and account, catalog and order gRPC services in one binary (marketplace serve --target ...)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=binary /marketplace /usr/local/bin/marketplace
# The working directory, owned by the user: `serve --target all` keeps its
# data in ./marketplace-data, so a plain `docker run` works and a volume
# mounted on /data keeps the data. The other targets write nothing to disk
# (which is why there is no /tmp), and the operator runs them with a
# read-only root filesystem. The directory in the context holds only an
# ignored placeholder, so /data starts empty.
COPY --chown=65532:65532 deploy/images/data/ /data/
WORKDIR /data
# `nonroot` of the distroless images; the operator's pods run as it too.
USER 65532:65532
# Gateway (HTTP: GraphQL, /healthz, /readyz, /metrics); the account,
# catalog and order gRPC services; the admin port of a gRPC service process.
EXPOSE 8080 8081 8082 8083 9090
# The operator sets only the arguments (`serve --target <component>`).
ENTRYPOINT ["/usr/local/bin/marketplace"]
CMD ["serve", "--target", "all"]
