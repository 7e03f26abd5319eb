//! `cargo xtask manifests`: regenerates the CRD YAML in `deploy/crds/` from the Rust types.
use std::path::Path;

use crate::shell::{Cmd, step};

/// Runs the `crdgen` example of multus-kube, which writes one file per CRD.
pub fn run() -> anyhow::Result<()> {
    step("CRD manifests");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("xtask has no parent directory"))?;
    Cmd::new("cargo")
        .args([
            "run",
            "--quiet",
            "--package",
            "multus-kube",
            "--example",
            "crdgen",
            "--",
        ])
        .args([root.join("deploy/crds")])
        .run()
}
