//! Compiles every .proto under ../../proto with protox (pure Rust, no protoc), generates messages and tonic
//! stubs, and writes the encoded file descriptor set (options and comments kept) for reflection and the
//! gateway.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    // Relative paths (to this crate): a clone elsewhere that shares the target directory is checked against its
    // own protos, not against those of whichever checkout built last.
    println!("cargo:rerun-if-changed=../../proto");

    let mut files = Vec::new();
    proto_files(&root, &mut files)?;
    files.sort();
    for file in &files {
        if let Ok(relative) = file.strip_prefix(&root) {
            println!("cargo:rerun-if-changed=../../proto/{}", relative.display());
        }
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files.iter().map(|f| f.strip_prefix(&root).unwrap_or(f)))?;

    // The encoded set keeps custom options (google.api.http, mercato.options.v1.*) that the
    // prost_types view would drop; the gateway and the services' access checks read them from it.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor_set.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // One file declaring the module tree of every package, so a new proto needs no change to lib.rs.
        .include_file("_includes.rs")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
