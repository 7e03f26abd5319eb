//! Finding and reading the primary (cluster network) CNI configuration: the alphabetically
//! first `*.conf`, `*.conflist` or `*.json` file of the autoconfig directory, skipping our own
//! `00-multus*` files, validated exactly as the engine will validate it.
use std::{
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use multus_cni::delegate::DelegateConf;
use serde_json::{Map, Value};

use super::error::{InstallError, Result};

/// Names starting with this are ours and never taken as the primary.
pub const OWN_PREFIX: &str = "00-multus";
/// The file endings CNI runtimes load (libcni and containerd also load `.json`).
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// A primary configuration, read and validated.
#[derive(Debug, Clone)]
pub struct Primary {
    /// Its file.
    pub path: PathBuf,
    /// The file's bytes, to notice changes.
    pub bytes: Vec<u8>,
    /// The parsed object, as it goes into `delegates`.
    pub json: Map<String, Value>,
    /// The engine's view of it (name, version, plugins).
    pub conf: DelegateConf,
}

/// The state of the primary configuration.
#[derive(Debug)]
pub enum Lookup {
    /// Usable.
    Ready(Primary),
    /// No candidate file.
    Missing,
    /// A candidate that is still being written (truncated JSON), or that vanished while read.
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What is wrong with it for now.
        reason: String,
    },
}

/// The primary's file in `dir`: `pinned` (a file name) when given, otherwise the first
/// candidate in byte order of the names. `None` when there is none (or `dir` is missing).
pub fn find(dir: &Path, pinned: Option<&str>) -> Result<Option<PathBuf>> {
    if let Some(name) = pinned {
        let path = dir.join(name);
        return Ok(path.is_file().then_some(path));
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InstallError::io("listing", dir, e)),
    };
    let mut best: Option<PathBuf> = None;
    for entry in entries {
        let entry = entry.map_err(|e| InstallError::io("listing", dir, e))?;
        let name = entry.file_name();
        if !is_candidate(name.as_bytes()) || !entry.path().is_file() {
            continue;
        }
        if best
            .as_ref()
            .and_then(|b| b.file_name())
            .is_none_or(|b| name.as_bytes() < b.as_bytes())
        {
            best = Some(entry.path());
        }
    }
    Ok(best)
}

fn is_candidate(name: &[u8]) -> bool {
    !name.starts_with(OWN_PREFIX.as_bytes())
        && EXTENSIONS.iter().any(|ext| {
            name.len() > ext.len() + 1
                && name.ends_with(ext.as_bytes())
                && name[name.len() - ext.len() - 1] == b'.'
        })
}

/// Looks up and reads the primary.
pub fn lookup(dir: &Path, pinned: Option<&str>) -> Result<Lookup> {
    match find(dir, pinned)? {
        None => Ok(Lookup::Missing),
        Some(path) => load(&path),
    }
}

/// Reads and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Lookup> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Lookup::Incomplete {
                path: path.to_owned(),
                reason: "removed while being read".into(),
            });
        }
        Err(e) => return Err(InstallError::io("reading", path, e)),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        // A primary CNI that writes its file in place is seen mid-write: wait for the rest.
        Err(e) if e.is_eof() => {
            return Ok(Lookup::Incomplete {
                path: path.to_owned(),
                reason: format!("incomplete JSON ({e})"),
            });
        }
        Err(e) => {
            return Err(InstallError::Primary {
                path: path.to_owned(),
                reason: format!("not valid JSON: {e}"),
            });
        }
    };
    let Value::Object(json) = value.clone() else {
        return Err(InstallError::Primary {
            path: path.to_owned(),
            reason: "not a JSON object".into(),
        });
    };
    let conf =
        DelegateConf::from_value(value, None, &path.display().to_string()).map_err(
            |e| match e {
                multus_cni::Error::Version { version, .. } => InstallError::Version {
                    path: path.to_owned(),
                    reason: format!(
                        "cniVersion {version:?} is not supported by multus-cni (supported: {})",
                        supported()
                    ),
                },
                other => InstallError::Primary {
                    path: path.to_owned(),
                    reason: other.to_string(),
                },
            },
        )?;
    Ok(Lookup::Ready(Primary {
        path: path.to_owned(),
        bytes,
        json,
        conf,
    }))
}

/// The supported CNI versions, for messages.
pub fn supported() -> String {
    multus_cni::cni::CniVersion::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn candidates() {
        for ok in ["10-flannel.conflist", "05-a.conf", "99.json", "x.conf"] {
            assert!(is_candidate(ok.as_bytes()), "{ok}");
        }
        for no in [
            "00-multus.conf",
            "00-multus.conflist",
            "00-multus-extra.conf",
            ".00-multus.conf.tmp-1-0",
            "conf",
            ".conf",
            "10-a.conf.bak",
            "10-aconf",
            "multus.kubeconfig",
            "multus.d",
        ] {
            assert!(!is_candidate(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn finds_alphabetically_first_skipping_own_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(find(&d.join("missing"), None).unwrap().is_none());
        assert!(find(d, None).unwrap().is_none());
        fs::create_dir(d.join("01-dir.conf")).unwrap();
        fs::write(d.join("00-multus.conf"), "{}").unwrap();
        fs::write(d.join("20-b.json"), "{}").unwrap();
        fs::write(d.join("10-a.conflist"), "{}").unwrap();
        fs::write(d.join("15-c.txt"), "{}").unwrap();
        assert_eq!(find(d, None).unwrap().unwrap(), d.join("10-a.conflist"));
        assert_eq!(
            find(d, Some("20-b.json")).unwrap().unwrap(),
            d.join("20-b.json")
        );
        assert!(find(d, Some("30-none.conf")).unwrap().is_none());
    }

    #[test]
    fn load_classifies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("10-a.conf");
        fs::write(&p, r#"{"cniVersion": "0.4.0", "name": "a", "type": "bri"#).unwrap();
        assert!(matches!(load(&p).unwrap(), Lookup::Incomplete { .. }));
        // A finished file that is wrong is an error naming what is wrong.
        for (content, expected) in [
            (
                r#"{"cniVersion": "0.4.0", "name": "a", "type": "bridge"} x"#,
                "not valid JSON",
            ),
            (
                r#"{"cniVersion": "0.2.1", "name": "a", "type": "bridge"}"#,
                "\"0.2.1\" is not supported",
            ),
            (r#"{"cniVersion": "0.4.0", "type": "bridge"}"#, "no name"),
        ] {
            fs::write(&p, content).unwrap();
            let err = load(&p).unwrap_err();
            assert!(err.to_string().contains(expected), "{content}: {err}");
        }
        fs::write(
            &p,
            r#"{"cniVersion": "0.2.1", "name": "a", "type": "bridge"}"#,
        )
        .unwrap();
        assert!(matches!(
            load(&p).unwrap_err(),
            InstallError::Version { .. }
        ));
        fs::write(
            &p,
            r#"{"cniVersion": "0.4.0", "name": "a", "type": "bridge"}"#,
        )
        .unwrap();
        let Lookup::Ready(primary) = load(&p).unwrap() else {
            panic!("not ready")
        };
        assert_eq!(primary.conf.name(), "a");
        assert!(matches!(
            load(&dir.path().join("gone.conf")).unwrap(),
            Lookup::Incomplete { .. }
        ));
    }
}
