//! Static executables: the release build for the musl target (a shim that runs on any Linux
//! node, whatever its libc), and the check that what it made needs no loader and no library.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};

use crate::shell::{Cmd, step};

/// The target of the static builds (its std links musl in; .cargo/config.toml sets the flags).
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the release binaries of `packages` for [`MUSL_TARGET`], checks that each `binaries`
/// is static, and returns the directory they are in.
pub fn build(packages: &[&str], binaries: &[&str]) -> anyhow::Result<PathBuf> {
    step(&format!(
        "building {} (release, static, {MUSL_TARGET})",
        packages.join(", ")
    ));
    Cmd::new("cargo")
        .args(["build", "--release", "--target", MUSL_TARGET])
        .args(packages.iter().flat_map(|p| ["--package", p]))
        .run()?;
    let dir = crate::shell::target_dir(&format!("{MUSL_TARGET}/release"));
    for bin in binaries {
        let linkage = check_static(&dir.join(bin))?;
        crate::shell::note(&format!("{bin}: {linkage}"));
    }
    Ok(dir)
}

/// How an executable is linked, as its ELF headers and `file` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linkage {
    /// ET_EXEC rather than ET_DYN (PIE): nothing to relocate at start.
    pub position_dependent: bool,
    /// `file`'s description.
    pub file: String,
}

impl std::fmt::Display for Linkage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)
    }
}

/// ELF program header types that mean a run-time loader or shared libraries.
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;

/// Fails unless `path` is a static executable: no program interpreter and no dynamic section in
/// its ELF headers, `file` says "statically linked" and `ldd` finds no library.
pub fn check_static(path: &Path) -> anyhow::Result<Linkage> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (kind, segments) =
        elf_segments(&elf).with_context(|| format!("{}: not a 64-bit ELF", path.display()))?;
    ensure!(
        !segments.contains(&PT_INTERP),
        "{} asks for a program interpreter (dynamically linked)",
        path.display()
    );
    ensure!(
        !segments.contains(&PT_DYNAMIC),
        "{} has a dynamic section (shared libraries or self-relocation)",
        path.display()
    );
    let file = Cmd::new("file")
        .args(["-b"])
        .args([path])
        .probe()
        .with_context(|| format!("`file {}` failed (is `file` installed?)", path.display()))?;
    let file = file.trim().to_owned();
    ensure!(
        file.contains("statically linked"),
        "`file` says {} is not static: {file}",
        path.display()
    );
    // ldd fails with "not a dynamic executable" on a static binary; a list of libraries means
    // dynamic.
    let ldd = std::process::Command::new("ldd")
        .arg(path)
        .output()
        .context("running ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    if !(said.contains("not a dynamic executable") || said.contains("statically linked")) {
        bail!("`ldd {}` lists libraries: {said}", path.display());
    }
    Ok(Linkage {
        position_dependent: kind == ET_EXEC,
        file,
    })
}

/// The ELF type and the program header types of a little-endian 64-bit ELF file.
fn elf_segments(elf: &[u8]) -> Option<(u16, Vec<u32>)> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let kind = u16_at(0x10)?;
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let segments = (0..phnum)
        .map(|i| u32_at(phoff + i * phentsize))
        .collect::<Option<Vec<u32>>>()?;
    Some((kind, segments))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_static() {
        // The test binary itself is linked against glibc.
        let me = std::env::current_exe().unwrap();
        let err = check_static(&me).unwrap_err().to_string();
        assert!(err.contains("program interpreter"), "{err}");
        let (_, segments) = elf_segments(&std::fs::read(&me).unwrap()).unwrap();
        assert!(segments.contains(&PT_INTERP));
        assert!(elf_segments(b"#!/bin/sh\n").is_none());
    }
}
