//! Compiles the API's `.proto` (in the repository's `proto/`) with protox, a pure-Rust protobuf
//! compiler, so building the client needs no `protoc`. Only messages and clients are generated:
//! the server's stubs belong to the server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/floodgate/v1/floodgate.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
