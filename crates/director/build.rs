//! Compiles the fan-out wire contract and Switchyard's own API (`proto/`)
//! with prost and tonic, without protoc: protox parses the `.proto` files in
//! pure Rust. The API's descriptors are also written out, so that clients can
//! print its replies as JSON without reflection.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    const PROTOS: [&str; 4] = [
        "proto/switchyard/common/v1/common.proto",
        "proto/google/rpc/status.proto",
        "proto/switchyard/v1/cluster.proto",
        "proto/switchyard/v1/envelope.proto",
    ];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("switchyard_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
