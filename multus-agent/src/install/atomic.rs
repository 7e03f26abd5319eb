//! Atomic file replacement for host directories: a private temp file in the target's own
//! directory, fsync, rename over the target, fsync of the directory. Readers (kubelet, the
//! container runtime, an `execve`) see the old file or the new one, never a partial one, and a
//! binary that is being executed is replaced without ever being opened for writing (which
//! fails with ETXTBSY).
//!
//! Temp files are named `.<target>.tmp-<pid>-<n>`: hidden, and without a `.conf`, `.conflist`
//! or `.json` ending, so no runtime ever loads one as a CNI configuration.
use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use multus_cni::files::{Atomic, temp_prefix, write_atomic};

use super::error::{InstallError, Result};

/// Writes the content produced by `fill` to `target` atomically and durably with permissions
/// `mode` ([`multus_cni::files`], whose temp names [`sweep`] knows).
fn replace_with(
    target: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let how = Atomic {
        mode,
        durable: true,
    };
    write_atomic(target, how, fill).map_err(|e| InstallError::io("replacing", target, e))
}

/// Replaces `target` with `bytes`, mode `mode`, atomically and durably.
pub fn write(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace_with(target, mode, |f| f.write_all(bytes))
}

/// Replaces `target` with a copy of `source`, mode `mode`, atomically and durably.
pub fn copy(source: &Path, target: &Path, mode: u32) -> Result<()> {
    let mut input = File::open(source).map_err(|e| InstallError::io("opening", source, e))?;
    replace_with(target, mode, |f| io::copy(&mut input, f).map(drop))
}

/// `Some(bytes)` of `path`, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InstallError::io("reading", path, e)),
    }
}

/// Whether the files `a` and `b` have the same content (false when `b` is missing), compared
/// in chunks so a large binary is never held in memory twice.
pub fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).map_err(|e| InstallError::io("opening", a, e))?;
    let mut fb = match File::open(b) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(InstallError::io("opening", b, e)),
    };
    let len = |f: &File, p: &Path| {
        f.metadata()
            .map(|m| m.len())
            .map_err(|e| InstallError::io("reading metadata of", p, e))
    };
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(|e| InstallError::io("reading", a, e))?;
        let m = read_full(&mut fb, &mut bb).map_err(|e| InstallError::io("reading", b, e))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Removes temp files of `targets` (file names in `dir`) older than `age`: what a writer
/// killed between create and rename left behind. A live writer's temp file is seconds old.
pub fn sweep(dir: &Path, targets: &[&str], age: Duration) -> Vec<PathBuf> {
    let prefixes: Vec<String> = targets.iter().map(|t| temp_prefix(t)).collect();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("00-multus.conf");
        fs::write(&target, "old").unwrap();
        let old_inode = fs::metadata(&target).unwrap().ino();
        write(&target, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_ne!(meta.ino(), old_inode, "replaced by rename, not rewritten");
        assert_eq!(names(dir.path()), ["00-multus.conf"]);
    }

    #[test]
    fn failed_write_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::write(&target, "old").unwrap();
        let err = replace_with(&target, 0o600, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["t"]);
    }

    #[test]
    fn same_content_compares_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&a, &big).unwrap();
        fs::write(&b, &big).unwrap();
        let mut other = big.clone();
        other[150_000] ^= 1;
        fs::write(&c, &other).unwrap();
        assert!(same_content(&a, &b).unwrap());
        assert!(!same_content(&a, &c).unwrap());
        assert!(!same_content(&a, &dir.path().join("missing")).unwrap());
    }

    #[test]
    fn sweep_removes_only_old_temps_of_given_targets() {
        let dir = tempfile::tempdir().unwrap();
        for n in [".multus.tmp-1-0", ".other.tmp-1-0", "multus"] {
            fs::write(dir.path().join(n), "x").unwrap();
        }
        assert!(sweep(dir.path(), &["multus"], Duration::from_secs(3600)).is_empty());
        let removed = sweep(dir.path(), &["multus"], Duration::ZERO);
        assert_eq!(removed, [dir.path().join(".multus.tmp-1-0")]);
        assert_eq!(names(dir.path()), [".other.tmp-1-0", "multus"]);
    }
}
