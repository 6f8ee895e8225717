//! Compiles the fan-out wire contract (`proto/`) with prost, without protoc:
//! protox parses the `.proto` files in pure Rust.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    const PROTOS: [&str; 2] = [
        "proto/switchyard/common/v1/common.proto",
        "proto/google/rpc/status.proto",
    ];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
