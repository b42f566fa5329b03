//! Generates the gRPC service and messages from `proto/` with protox, a
//! .proto compiler written in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(["grpc_service.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Clients are generated for tests and tools; connecting is left to
        // the caller (`tonic::transport::Channel`), so the library needs no
        // client transport.
        .build_transport(false)
        // `bytes` fields as `bytes::Bytes`: raw tensor contents are sliced
        // out of the received message, not copied.
        .bytes(".inference")
        .compile_fds(files)?;
    Ok(())
}
