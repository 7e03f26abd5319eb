//! The on-disk record of one attachment: what the id is attached to and how. Its identity (id
//! and owner) is the thick-mode contract's ([`multus_cni::thick::record`]), which the shim's DEL
//! fallback reads while the agent is down; the rest is the agent's own.
use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use multus_cni::{
    files::{Atomic, temp_writer, write_atomic},
    thick::RecordIdentity,
};
use serde::{Deserialize, Serialize};

use super::{
    AttachMode,
    error::{DataplaneError, Result},
};
use crate::policy::model::Policy;

pub use multus_cni::thick::AttachmentOwner;

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
        let how = Atomic {
            mode: 0o644,
            durable: false,
        };
        write_atomic(path, how, |f| f.write_all(&bytes))
            .map_err(|e| DataplaneError::io("writing", path, e))
    }

    /// The contract's part of the record (what the shim's fallback reads).
    pub fn identity(&self) -> RecordIdentity {
        RecordIdentity {
            id: self.id,
            owner: self.owner.clone(),
        }
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

/// Removes the temp files (see [`multus_cni::files`]) that an agent killed while writing a
/// record left in `dir`: those whose writer is not running any more, or older than `age`; never
/// one younger than `grace` (see [`multus_cni::engine::cache::stale_temp_file`]). Returns what
/// it removed.
pub fn sweep_temp_files(
    dir: &Path,
    age: std::time::Duration,
    grace: std::time::Duration,
) -> Vec<PathBuf> {
    multus_cni::engine::cache::sweep_stale(dir, temp_writer, age, grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shim's DEL fallback finds a container's attachments through the contract's view of
    /// the record: what the agent saves must read back as the same identity there.
    #[test]
    fn saved_records_read_back_through_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let record = AttachmentRecord {
            id: 9,
            netns: PathBuf::from("/var/run/netns/x"),
            ifname: "net1".to_owned(),
            ifindex: 4,
            netns_cookie: 77,
            mode: AttachMode::Tcx,
            owner: AttachmentOwner {
                namespace: "ns".to_owned(),
                pod: "p".to_owned(),
                network: "ns/net".to_owned(),
                container_id: "c9".to_owned(),
            },
            policy: None,
            policy_source: None,
        };
        record.save(&dir.path().join("9.json")).unwrap();
        let read = multus_cni::thick::record::identities(dir.path()).unwrap();
        assert_eq!(read, [record.identity()]);
    }
}
