//! The on-disk record of one attachment: what the id is attached to and how.
use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    AttachMode,
    error::{DataplaneError, Result},
};
use crate::policy::model::Policy;

/// Who an attachment belongs to; filled in by the agent, empty for bare attachments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentOwner {
    /// Kubernetes namespace of the pod.
    #[serde(default)]
    pub namespace: String,
    /// Pod name.
    #[serde(default)]
    pub pod: String,
    /// Network name, `<nad-namespace>/<nad-name>`.
    #[serde(default)]
    pub network: String,
    /// The runtime's container (sandbox) id.
    #[serde(default)]
    pub container_id: String,
}

/// One interface the programs are attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The attachment id: the key of every per-interface map entry.
    pub id: u32,
    /// The network namespace file the interface lives in.
    pub netns: PathBuf,
    /// The interface name inside that namespace.
    pub ifname: String,
    /// The interface index inside that namespace.
    pub ifindex: u32,
    /// The namespace's cookie.
    pub netns_cookie: u64,
    /// How the programs are attached.
    pub mode: AttachMode,
    /// Who the attachment belongs to.
    #[serde(default)]
    pub owner: AttachmentOwner,
    /// The policy in force; `None`: the attachment only counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Where the policy comes from, as whoever installed it describes it (the agent:
    /// `nad:<ns>/<name>+mnp:<ns>/<name>,...`); `None` for a policy given by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_source: Option<String>,
}

impl AttachmentRecord {
    /// Writes the record atomically (temp file, rename), so a crash of the agent never leaves half
    /// a file.
    ///
    /// No fsync: a record describes kernel state (pins in bpffs, map entries) that does not
    /// survive a reboot either, so the page cache is as durable as it needs to be; the state
    /// directory belongs on tmpfs anyway. The engine's cache, which DEL needs after a reboot, is
    /// another matter and is fsync'd.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| DataplaneError::Record {
            path: path.to_owned(),
            source,
        })?;
        write_atomic(path, &bytes).map_err(|e| DataplaneError::io("writing", path, e))
    }

    /// Reads a record.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| DataplaneError::io("reading", path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| DataplaneError::Record {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads every record in `dir`, in id order; unreadable files are returned as errors.
    pub fn load_all(dir: &Path) -> Result<(Vec<Self>, Vec<DataplaneError>)> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(DataplaneError::io("listing", dir, e)),
        };
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DataplaneError::io("listing", dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                match Self::load(&path) {
                    Ok(record) => records.push(record),
                    Err(e) => errors.push(e),
                }
            }
        }
        records.sort_by_key(|r| r.id);
        Ok((records, errors))
    }
}

/// Removes the temp files (`.<id>.json.<pid>.tmp`) that an agent killed while writing a record
/// left in `dir`: those whose writer is not running any more, or older than `age`; never one
/// younger than `grace` (see [`multus_cni::engine::cache::stale_temp_file`]). Returns what it
/// removed.
pub fn sweep_temp_files(
    dir: &Path,
    age: std::time::Duration,
    grace: std::time::Duration,
) -> Vec<PathBuf> {
    let pid_of = |name: &str| {
        name.strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit_once('.'))
            .map(|(_, pid)| pid.parse::<u32>().ok())
    };
    multus_cni::engine::cache::sweep_stale(dir, pid_of, age, grace)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes)?;
    fs::rename(&tmp.0, path)
}

fn tempfile_in(dir: &Path, path: &Path) -> io::Result<(PathBuf, fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    Ok((tmp, file))
}
