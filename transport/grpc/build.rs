//! Compiles `proto/magpie/v1/*.proto` and `proto/tensorflow/*.proto` (the subset of
//! TensorFlow's master service Magpie serves) with protox (pure Rust: no `protoc`
//! needed) and generates the prost messages and tonic services (with `codec::WireCodec`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("magpie/v1/tensor.proto"),
        root.join("magpie/v1/worker.proto"),
        root.join("magpie/v1/master.proto"),
        root.join("tensorflow/framework.proto"),
        root.join("tensorflow/master.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    // Undecodable messages are INVALID_ARGUMENT, not tonic-prost's INTERNAL (src/codec.rs).
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::WireCodec")
        .compile_fds(fds)?;
    Ok(())
}
