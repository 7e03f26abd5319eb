//! The attachment record's contract: the agent writes one JSON file per attachment
//! (`<state>/attachments/<id>.json`, see [`super::layout`]) holding at least [`RecordIdentity`]'s
//! fields; the rest (interface, attach mode, policy) is the agent's own. The shim's DEL fallback
//! reads only the identity, to find a container's attachments while the agent is down.
use std::{fs, io, path::Path};

use serde::{Deserialize, Serialize};

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

/// The fields every record has, whoever reads it: the attachment id and its owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordIdentity {
    /// The attachment id: the key of every per-interface map entry and of the link pins.
    pub id: u32,
    /// Who the attachment belongs to.
    #[serde(default)]
    pub owner: AttachmentOwner,
}

/// The identities of the records in `dir`, in id order; files that are not records (temp
/// files, junk) are skipped. A missing directory holds none.
pub fn identities(dir: &Path) -> io::Result<Vec<RecordIdentity>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<RecordIdentity> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .filter_map(|path| fs::read(&path).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    out.sort_by_key(|r| r.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_skip_what_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        assert!(identities(&dir.path().join("none")).unwrap().is_empty());
        fs::write(
            dir.path().join("3.json"),
            r#"{"id": 3, "ifname": "net1", "owner": {"container_id": "c1", "pod": "p"}}"#,
        )
        .unwrap();
        fs::write(dir.path().join("1.json"), r#"{"id": 1}"#).unwrap();
        fs::write(dir.path().join("junk.json"), "{").unwrap();
        fs::write(dir.path().join(".2.json.7.tmp"), r#"{"id": 2}"#).unwrap();
        let ids = identities(dir.path()).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!((ids[0].id, ids[0].owner.container_id.as_str()), (1, ""));
        assert_eq!((ids[1].id, ids[1].owner.container_id.as_str()), (3, "c1"));
    }
}
