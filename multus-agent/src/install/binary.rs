//! Installing the `multus-cni` binary into the host's CNI bin directory.
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use super::{
    atomic,
    error::{InstallError, Result},
};

/// The file mode of installed binaries.
const MODE: u32 = 0o755;

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// The binary was (re)placed.
    Installed,
    /// The target already had this content and mode.
    Unchanged,
}

/// Installs `source` as `dir/name`: skipped when the target already has the same bytes and
/// mode, otherwise an atomic replace, so a running copy of the old binary is no obstacle.
pub fn install(source: &Path, dir: &Path, name: &str) -> Result<Copied> {
    let meta = fs::metadata(source).map_err(|e| InstallError::io("reading", source, e))?;
    if !meta.is_file() {
        return Err(InstallError::Option {
            option: "--multus-bin-file",
            reason: format!("{} is not a regular file", source.display()),
        });
    }
    let target = dir.join(name);
    let mode_ok = fs::metadata(&target).is_ok_and(|m| m.permissions().mode() & 0o777 == MODE);
    if mode_ok && atomic::same_content(source, &target)? {
        return Ok(Copied::Unchanged);
    }
    atomic::copy(source, &target, MODE)?;
    Ok(Copied::Installed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn installs_then_skips_identical_then_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(&src, "v1").unwrap();
        assert_eq!(install(&src, &bin, "multus").unwrap(), Copied::Installed);
        assert_eq!(install(&src, &bin, "multus").unwrap(), Copied::Unchanged);
        let target = bin.join("multus");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            install(&src, &bin, "multus").unwrap(),
            Copied::Installed,
            "mode repaired"
        );
        fs::write(&src, "v2").unwrap();
        assert_eq!(install(&src, &bin, "multus").unwrap(), Copied::Installed);
        assert_eq!(fs::read(&target).unwrap(), b"v2");
    }

    #[test]
    fn missing_source_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = install(&dir.path().join("nope"), dir.path(), "multus").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = install(dir.path(), dir.path(), "multus").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
