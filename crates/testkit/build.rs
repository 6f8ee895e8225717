//! Compiles the test protos with protox (no `protoc` needed) and generates
//! prost messages plus tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/switchyard/test/v1/test.proto",
        "proto/google/rpc/status.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    // For servers that answer gRPC reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .include_file("protos.rs")
        .compile_fds(fds)?;
    Ok(())
}
