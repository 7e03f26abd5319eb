//! `cargo xtask fuzz [target] [--seconds N]`: runs multus-cni's cargo-fuzz targets (config,
//! annotation, result and Multus scratch-cache parsing), installing cargo-fuzz first when it is
//! missing. Not part of `cargo xtask test`.
use std::path::Path;

use anyhow::bail;

use crate::{
    prereqs::TOOLCHAIN,
    shell::{Cmd, note, step},
};

/// The fuzz targets in multus-cni/fuzz.
const TARGETS: &[&str] = &["config", "annotation", "result", "multus_cache"];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// One target (config, annotation, result, multus_cache); all of them when left out.
    target: Option<String>,
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// Runs the chosen targets one after the other.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("unknown fuzz target {t:?} (known: {})", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    if Cmd::new("cargo")
        .args(["fuzz", "--version"])
        .probe()
        .is_none()
    {
        step("installing cargo-fuzz");
        Cmd::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .run()?;
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../multus-cni");
    for target in targets {
        step(&format!("fuzzing {target} for {} s", args.seconds));
        // cargo-fuzz passes -Z flags; the pinned stable toolchain accepts them with this set.
        Cmd::new("cargo")
            .args([
                &format!("+{TOOLCHAIN}"),
                "fuzz",
                "run",
                "--fuzz-dir",
                &crate_dir.join("fuzz").to_string_lossy(),
                target,
                "--",
                &format!("-max_total_time={}", args.seconds),
            ])
            .env("RUSTC_BOOTSTRAP", "1")
            .run()?;
        note(&format!("{target}: no crash in {} s", args.seconds));
    }
    Ok(())
}
