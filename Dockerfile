# syntax=docker/dockerfile:1
# snapgate's image: built with a pinned Rust toolchain, run as a non-root user in a distroless
# image (glibc and CA certificates, no shell, no package manager). tests/it/container_lint.rs checks
# the rules below; CI builds this file with buildah and runs the image (.ci/image,
# docs/deployment.md), with stand-ins for the base images made from Debian's packages.

# The toolchain CI uses (rustc 1.95.0); at least Cargo.toml's rust-version.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# Compiled in: config/default.toml (the defaults, `include_str!`) and the migrations
# (`sqlx::migrate!`; build.rs rebuilds when they change); Cargo.toml names the bench targets.
COPY config ./config
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# BuildKit cache mounts keep the crates.io downloads and the compiled dependencies between
# builds, so a source change recompiles snapgate only. The binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin snapgate \
 && install -D -m 0755 target/release/snapgate /out/snapgate \
 && mkdir -p /out/data

# Debian 12's glibc, as in the build image. `nonroot` is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
WORKDIR /app
COPY --from=build /out/snapgate /usr/local/bin/snapgate
COPY config ./config
# The SQLite default and the master key file live here (single instance); Postgres needs neither.
COPY --from=build --chown=65532:65532 /out/data ./data
USER 65532:65532
ENV SNAPGATE__HTTP__LISTEN=0.0.0.0:8080
# No transparent huge pages for the allocator on hosts where THP is `always` (see Cargo.toml).
ENV MIMALLOC_ALLOW_THP=0
EXPOSE 8080
# No shell and no curl: the binary checks itself (GET /readyz on http.listen, exit 0 or 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["snapgate", "healthcheck", "--timeout-ms", "2000"]
ENTRYPOINT ["snapgate"]
CMD ["serve"]
