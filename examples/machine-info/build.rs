//! Compiles the sample API without protoc; the fan-out `Metadata` message
//! comes from the director crate's wire contract.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/machineinfo/v1/machineinfo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto", "../../crates/director/proto"])?;
    // Served by gRPC reflection, so clients (and Switchyard) can discover the API.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("machineinfo_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
