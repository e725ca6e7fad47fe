//! Compiles proto/coffer/v1 with protox (pure Rust: no system protoc) and writes the descriptor
//! set for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "coffer/v1/types.proto",
        "coffer/v1/wallet.proto",
        "coffer/v1/admin.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let descriptors = protox::compile(&paths, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("coffer_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Ordered maps: a transaction's metadata (a handful of entries) then decodes without
        // hashing every key, and lists in the same order on every client.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
