# syntax=docker/dockerfile:1
#
# Not built in CI: the CI machines have no container engine.
#
# The inferd image: the one `inferd` binary (model server, router, operator,
# model download) on distroless, as the user 65532 (nonroot). The operator
# runs this image for its replicas and routers too; its default is
# ghcr.io/inferd/inferd:<workspace version>:
#   docker build -t ghcr.io/inferd/inferd:0.1.0 .
#
# ONNX runtime: the default ONNX backend, tract, is pure Rust and built into
# the binary, so the image needs no shared library to serve models. The
# onnxruntime backend (`--onnx-backend ort`; compiled in by default, nothing
# linked) opens libonnxruntime.so at run time from --ort-library or
# ORT_DYLIB_PATH. This image ships without it: replicas use the default
# backend, and an InferenceService with `runtime.onnxBackend: ort` needs an
# image derived from this one that adds the library and sets ORT_DYLIB_PATH.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cargo registry and target folder are cached across builds; the binary
# is copied out of the cache mount within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p inferd \
    && install -D -m 0755 target/release/inferd /out/inferd

# glibc and libgcc (the binary is linked against them); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/inferd /usr/local/bin/inferd
USER 65532:65532
# HTTP (inference, health, /metrics) and gRPC of `inferd serve` and the
# router; 9090 the router's admin port (/stats, /metrics, /healthz).
EXPOSE 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/inferd"]
