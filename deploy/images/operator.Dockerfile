# The `marketplace-operator` image: the static operator binary on an empty
# base (no shell, no libc, no package manager), run as a non-root user.
# Build it from the repository root:
#
#   docker build -f deploy/images/operator.Dockerfile -t ghcr.io/marketplace/marketplace-operator:dev .
#
# The stages are those of marketplace.Dockerfile: `build` compiles in the
# official Rust image with cached registry and target directory; `prebuilt`
# takes a static binary from the build context instead (`--build-arg
# BINARY_SOURCE=prebuilt`, optionally `--build-arg BINARY=<path>`) and pulls
# nothing; `runtime` is the image.
#
# No CA bundle: in a cluster the operator trusts the cluster's CA from its
# service account (kube-rs reads it from the kubeconfig or the mounted
# `ca.crt`) and calls nothing else over TLS.

ARG RUST_VERSION=1.95.0
ARG BINARY_SOURCE=build

FROM docker.io/library/rust:${RUST_VERSION}-slim-trixie AS build
WORKDIR /src
# See marketplace.Dockerfile for why rust-toolchain.toml is left out.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY proto proto
COPY crates crates
COPY operator operator
COPY xtask xtask
RUN --mount=type=cache,id=marketplace-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=marketplace-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=marketplace-target,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --locked --profile image --target "$target" -p marketplace-operator \
    && cp "target/$target/image/marketplace-operator" /marketplace-operator

FROM scratch AS prebuilt
ARG BINARY=target/images/marketplace-operator
COPY ${BINARY} /marketplace-operator

FROM ${BINARY_SOURCE} AS binary

FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="marketplace-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs a marketplace from each Marketplace resource (marketplace.dev/v1alpha1)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=binary /marketplace-operator /usr/local/bin/marketplace-operator
# `nonroot` of the distroless images, as the operator's Deployment expects.
USER 65532:65532
# /metrics and /healthz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/marketplace-operator"]
