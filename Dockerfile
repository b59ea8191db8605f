# syntax=docker/dockerfile:1
# The niso image: both binaries, `niso-server` (the API; the default command) and
# `niso-operator`, on a minimal non-root base. The Helm chart (charts/niso) runs this image.
#
#   docker build -t ghcr.io/niso-online/niso:0.1.0 .
#
# No system libraries are needed: TLS is rustls, SQLite and zstd are bundled and built with cc.
# The `production` profile is release with whole-program LTO (Cargo.toml says why).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binaries are copied out of
# the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile production --locked --bin niso-server --bin niso-operator \
 && mkdir -p /out \
 && cp target/production/niso-server target/production/niso-operator /out/

# glibc, libgcc and CA certificates, no shell, no package manager; user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/niso-server /out/niso-operator /usr/local/bin/
USER 65532:65532
# NISO_DATA_DIR for the embedded default (SQLite + local chunks); on Kubernetes the chart uses
# PostgreSQL and S3 and mounts an emptyDir on /tmp under a read-only root filesystem.
ENV NISO_DATA_DIR=/tmp/niso-data
# API, metrics, operator metrics/health.
EXPOSE 8080 9090 8081
ENTRYPOINT ["niso-server"]
CMD ["serve"]
