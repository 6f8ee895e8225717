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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .include_file("protos.rs")
        .compile_fds(fds)?;
    Ok(())
}
