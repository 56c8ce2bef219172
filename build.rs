//! Compiles the wire contract with protox, a pure-Rust protobuf compiler, so a build needs
//! no system `protoc`. The file descriptor set is kept for server reflection.
use prost::Message;
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["converge/context/v1/context.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("converge_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Payloads and hashes as `bytes::Bytes`: moved, not copied, between wire and model.
        .bytes(".converge.context.v1")
        .compile_fds(fds)?;
    Ok(())
}
