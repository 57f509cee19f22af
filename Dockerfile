# okta-stream: a small runtime image built in a Rust builder stage.
#
#   docker build -t okta-stream .
#   docker run -p 8080:8080 -p 127.0.0.1:50051:50051 -p 127.0.0.1:9090:9090 \
#     -v okta-stream-data:/data \
#     -e OKTA_STREAM_HOOK_SECRETS=... -e OKTA_STREAM_GRPC_TOKENS=... okta-stream
#
# Inside the container the service listens on all interfaces, so gRPC needs authentication:
# without OKTA_STREAM_GRPC_TOKENS (or OKTA_STREAM_GRPC_ADMIN_TOKENS, or a client CA for mTLS)
# `serve` refuses to start (exit 64, naming OKTA_STREAM_GRPC_TOKENS); see the README's
# "Security". Data (the embedded journal and a generated hook secret) lives in the /data
# volume, private (0700) to the non-root user. Port 8080 is the hook (for Okta), 50051 gRPC
# (for subscribers, with a token), 9090 the admin listener (/metrics, /healthz, /readyz:
# publish it only to your monitoring). The health check asks the admin listener's /readyz
# through the binary itself, so the image needs no curl.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Dependencies first, so editing the sources does not rebuild them: build against stub
# sources, then drop the stubs (and their fingerprints) before the real build.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY benches ./benches
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin okta-stream \
    && rm -rf src target/release/.fingerprint/okta-stream-* target/release/deps/okta_stream-* target/release/deps/libokta_stream-*
COPY src ./src
RUN cargo build --release --locked --bin okta-stream \
    && strip target/release/okta-stream \
    && mkdir -m 700 /data-template

# distroless/cc: glibc, libgcc, CA roots (for https:// calls to Okta), no shell, no package
# manager; its `nonroot` user is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder --chown=65532:65532 /data-template /data
COPY --from=builder /src/target/release/okta-stream /usr/local/bin/okta-stream

ENV OKTA_STREAM_HTTP_ADDR=0.0.0.0:8080 \
    OKTA_STREAM_GRPC_ADDR=0.0.0.0:50051 \
    OKTA_STREAM_ADMIN_ADDR=0.0.0.0:9090 \
    OKTA_STREAM_DATA_DIR=/data \
    OKTA_STREAM_HEALTH_URL=http://127.0.0.1:9090/readyz
VOLUME ["/data"]
EXPOSE 8080 9090 50051
USER 65532:65532
WORKDIR /data
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/okta-stream", "health"]
ENTRYPOINT ["/usr/local/bin/okta-stream"]
CMD ["serve"]
