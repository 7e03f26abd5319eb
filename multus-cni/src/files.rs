//! Files written whole or not at all, and files removed when present: the one way the engine,
//! the shim and the agent do both.
//!
//! A write goes to a private temp file in the target's own directory, named
//! `.<target>.tmp-<pid>-<n>` (hidden, with no `.conf`, `.conflist` or `.json` ending, so no
//! runtime loads one as a configuration and no reader lists one as an entry), then is renamed
//! over the target: a reader sees the old file or the new one, never a part. [`temp_writer`]
//! reads a temp file's name back for the sweeps that remove what a killed writer left.
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How [`write_atomic`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atomic {
    /// The file's permission bits (set exactly, whatever the umask).
    pub mode: u32,
    /// fsync the file before the rename and the directory after it, so the new content
    /// survives a crash of the machine (what DEL needs after a reboot); without it the page
    /// cache is as durable as the state it describes.
    pub durable: bool,
}

/// Removes the temp file unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The temp-file prefix of target file name `name`.
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Replaces `target` with what `fill` writes, atomically (see the module documentation). The
/// directory must exist. On error nothing is left but the old file, if any.
pub fn write_atomic(
    target: &Path,
    how: Atomic,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty());
    let name = target.file_name().and_then(|n| n.to_str());
    let (Some(dir), Some(name)) = (dir, name) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path with a directory and a UTF-8 name",
        ));
    };
    let mut tmp = TempFile {
        path: dir.join(format!(
            "{}{}-{}",
            temp_prefix(name),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )),
        armed: true,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(how.mode)
        .open(&tmp.path)?;
    fill(&mut file)?;
    // The umask may have narrowed the creation mode; the target's mode is part of the contract.
    file.set_permissions(fs::Permissions::from_mode(how.mode))?;
    if how.durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp.path, target)?;
    tmp.armed = false;
    if how.durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether `name` is a temp file of [`write_atomic`] (or of the writers before it,
/// `.<target>.tmp<pid>` and `.<target>.<pid>.tmp`), and the pid of its writer when the name
/// holds one: `None` for a name that is no temp file, `Some(None)` for one without a readable
/// pid.
pub fn temp_writer(name: &str) -> Option<Option<u32>> {
    let rest = name.strip_prefix('.')?;
    if let Some(head) = rest.strip_suffix(".tmp") {
        return Some(head.rsplit_once('.').and_then(|(_, pid)| pid.parse().ok()));
    }
    let (_, tail) = rest.rsplit_once(".tmp")?;
    let pid = tail.strip_prefix('-').unwrap_or(tail);
    Some(pid.split('-').next().and_then(|p| p.parse().ok()))
}

/// Removes the file at `path`; one already gone is no error (removals are retried, and DEL is
/// idempotent). Returns whether there was one.
pub fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// The only file in `dir` (no temp file beside it).
    fn only_file(dir: &Path) -> String {
        let all: Vec<_> = fs::read_dir(dir).unwrap().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0]
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn writes_whole_files_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("c1");
        for (content, durable) in [("one", true), ("two", false)] {
            let how = Atomic {
                mode: 0o600,
                durable,
            };
            write_atomic(&target, how, |f| f.write_all(content.as_bytes())).unwrap();
            assert_eq!(fs::read_to_string(&target).unwrap(), content);
        }
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(only_file(dir.path()), "c1");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("c1");
        fs::write(&target, "old").unwrap();
        let how = Atomic {
            mode: 0o644,
            durable: false,
        };
        let err = write_atomic(&target, how, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(only_file(dir.path()), "c1");
        assert!(write_atomic(Path::new("/"), how, |_| Ok(())).is_err());
    }

    #[test]
    fn temp_names_read_back() {
        let name = format!("{}{}-3", temp_prefix("c1"), 42);
        assert_eq!(temp_writer(&name), Some(Some(42)));
        assert_eq!(temp_writer(".c1.tmp42"), Some(Some(42)));
        assert_eq!(temp_writer(".7.json.42.tmp"), Some(Some(42)));
        assert_eq!(temp_writer(".7.json.tmp-x"), Some(None));
        assert_eq!(temp_writer("c1"), None);
        assert_eq!(temp_writer(".c1"), None);
    }

    #[test]
    fn removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        assert!(remove_if_exists(&file).unwrap());
        assert!(!remove_if_exists(&file).unwrap());
        assert!(remove_if_exists(dir.path()).is_err());
    }
}
