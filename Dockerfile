# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full toolchain, run on a slim image as
# a non-root user. Checked statically by .ci/check_packaging.py.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/engine.rs \
    && cargo build --release --locked --bin riskgate \
    && rm -rf src benches
COPY src src
COPY benches benches
COPY migrations migrations
COPY policies policies
COPY config config
COPY demo demo
# The stub build left newer timestamps behind; make sure the real sources win.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin riskgate

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/riskgate --create-home riskgate
COPY --from=build /src/target/release/riskgate /usr/local/bin/riskgate
COPY policies /etc/riskgate/policies
USER 10001:10001
WORKDIR /var/lib/riskgate
ENV RISKGATE_LISTEN=0.0.0.0:8080 \
    RISKGATE_LOG_FORMAT=json \
    RISKGATE_DATABASE_URL=sqlite:///var/lib/riskgate/riskgate.db
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["riskgate"]
CMD ["serve"]
