//! Compiles `proto/` with protox, a pure-Rust protobuf compiler, so a fresh machine needs no `protoc`.
//! The descriptor set is also written to `OUT_DIR` for gRPC server reflection.
//!
//! Only the service traits are generated here: the messages and clients come from the
//! floodgate-client crate (`extern_path`), so the server, its CLI and every Rust caller share
//! one set of types.

use std::path::PathBuf;

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/floodgate/v1/floodgate.proto";
    println!("cargo:rerun-if-changed={proto}");
    // `sqlx::migrate!` embeds the migrations at compile time: a new one must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("floodgate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".floodgate.v1", "::floodgate_client::proto")
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
