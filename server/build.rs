//! Compiles the KurrentDB gRPC protocol files in `proto/` into Rust (servers
//! and clients) with a pure-Rust protobuf compiler, so that a build needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/shared.proto",
        "proto/streams.proto",
        "proto/gossip.proto",
        "proto/serverfeatures.proto",
        "proto/persistent.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=proto/status.proto");
    println!("cargo:rerun-if-changed=proto/code.proto");
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
