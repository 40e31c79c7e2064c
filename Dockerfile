# syntax=docker/dockerfile:1
# The sagaflow worker and CLI as a small, non-root image.
#
#   docker build -t sagaflow:0.1.0 .
#   docker run --rm sagaflow:0.1.0 check-config /etc/sagaflow/sagas.toml
#
# deploy/ runs it on Kubernetes (docs/deploy.md). scripts/check-deploy.sh
# lints this file (hadolint) and checks that every path it copies exists.

# ---- build: the release binary, from the locked dependency graph --------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Every workspace member's manifest is needed to load the workspace, and
# the sources of the crates the binary links.
COPY Cargo.toml Cargo.lock sagas.toml ./
COPY workflows ./workflows
COPY activities ./activities
COPY payment-sandbox ./payment-sandbox
COPY worker ./worker
COPY integration-tests ./integration-tests
RUN cargo build --release --locked -p sagaflow \
    && strip target/release/sagaflow

# ---- runtime: the binary, CA roots and the default sagas.toml ------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to Service Bus, Cosmos DB, Redis (rediss://) and the
# payment provider. Debian's stable point releases only patch it, so the
# version is left to the base image's snapshot.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sagaflow \
    && useradd --system --uid 10001 --gid sagaflow --home-dir /var/lib/sagaflow --create-home sagaflow
COPY --from=build /src/target/release/sagaflow /usr/local/bin/sagaflow
COPY sagas.toml /etc/sagaflow/sagas.toml
# The admin API stays on loopback unless SAGAFLOW_ADMIN_BIND says otherwise
# (the Kubernetes manifests bind 0.0.0.0:7070, with a token).
ENV SAGAFLOW_CONFIG=/etc/sagaflow/sagas.toml \
    SAGAFLOW_DATA=/var/lib/sagaflow
USER 10001:10001
WORKDIR /var/lib/sagaflow
# The admin API: /healthz, /readyz, /metrics (no token) and /api (token).
EXPOSE 7070
ENTRYPOINT ["/usr/local/bin/sagaflow"]
CMD ["run"]
