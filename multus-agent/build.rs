//! Builds the eBPF object from the `multus-ebpf` crate and leaves it in OUT_DIR for embedding.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "multus-ebpf")
        .ok_or_else(|| anyhow!("multus-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("multus-ebpf manifest has no parent directory"))?
        .as_str();
    let package = Package {
        name: ebpf.name.as_str(),
        root_dir,
        ..Default::default()
    };
    // The pinned stable toolchain builds `core` for the bpf target with RUSTC_BOOTSTRAP=1 (set by
    // the nested build below); its LLVM matches bpf-linker's.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([package], Toolchain::Custom("1.98.0"))
}
