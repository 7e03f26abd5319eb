//! DEL without the agent: the engine runs in the shim's own process from the disk cache, so the
//! delegates free their interfaces and addresses even while the agent is down (Multus's shim
//! returns success instead, and leaks them).
//!
//! The eBPF attachments of the container belong to the agent. Here only their pinned TCX links
//! are removed (a pin is what keeps a link, and the program on it, alive); the attachment
//! records stay, and the agent finishes the job when it starts: it finds records whose
//! interface is gone and removes their map entries and the records themselves.
use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use tracing::{info, warn};

use crate::{
    cni::{Request, code},
    config::NetConf,
    engine::{Attachment, Engine, HookError, Hooks, Reply},
    network::NoSource,
};

/// Where the agent's dataplane keeps what the fallback must unpin.
#[derive(Debug, Clone)]
pub(crate) struct DataplaneDirs {
    /// The bpffs directory (`<bpffs>/links/<id>/{ingress,egress}`).
    pub bpffs: PathBuf,
    /// The record directory's parent (`<state>/attachments/<id>.json`).
    pub state: PathBuf,
}

impl DataplaneDirs {
    /// The pin directory of attachment `id`'s links.
    pub(crate) fn link_dir(&self, id: u32) -> PathBuf {
        self.bpffs.join("links").join(id.to_string())
    }

    /// The directory of attachment records.
    pub(crate) fn records(&self) -> PathBuf {
        self.state.join("attachments")
    }
}

/// The fields of an attachment record the fallback reads.
#[derive(Deserialize)]
struct RecordView {
    id: u32,
    #[serde(default)]
    owner: OwnerView,
}

#[derive(Deserialize, Default)]
struct OwnerView {
    #[serde(default)]
    container_id: String,
}

/// Removes the link pins of every attachment owned by one of `containers`; returns the ids.
pub(crate) fn unpin_containers(
    dirs: &DataplaneDirs,
    containers: &BTreeSet<&str>,
) -> Result<Vec<u32>, String> {
    let records = dirs.records();
    let entries = match fs::read_dir(&records) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("listing {}: {e}", records.display())),
    };
    let mut unpinned = Vec::new();
    let mut errors = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(record) = serde_json::from_slice::<RecordView>(&bytes) else {
            continue;
        };
        if !containers.contains(record.owner.container_id.as_str()) {
            continue;
        }
        match remove_link_pins(&dirs.link_dir(record.id)) {
            Ok(()) => unpinned.push(record.id),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(unpinned)
    } else {
        Err(errors.join("; "))
    }
}

fn remove_link_pins(dir: &Path) -> Result<(), String> {
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for hook in ["ingress", "egress"] {
        let pin = dir.join(hook);
        gone(fs::remove_file(&pin)).map_err(|e| format!("unpinning {}: {e}", pin.display()))?;
    }
    gone(fs::remove_dir(dir)).map_err(|e| format!("removing {}: {e}", dir.display()))
}

/// The fallback's DEL hook: unpin the container's links before the delegates run.
struct UnpinLinks(DataplaneDirs);

impl Hooks for UnpinLinks {
    fn on_del(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        let containers: BTreeSet<&str> = attachments
            .iter()
            .map(|a| a.container_id.as_str())
            .collect();
        match unpin_containers(&self.0, &containers) {
            Ok(ids) if ids.is_empty() => Ok(()),
            Ok(ids) => {
                info!(
                    ?ids,
                    "agent down: unpinned the eBPF links; the agent removes the rest when it starts"
                );
                Ok(())
            }
            Err(message) => Err(HookError {
                code: code::IO_FAILURE,
                message,
            }),
        }
    }
}

/// Runs DEL in-process: the engine with no network source (DEL reads only the cache) and a hook
/// that unpins the container's eBPF links.
pub(crate) fn del(request: &Request, conf: &NetConf, dirs: DataplaneDirs) -> Reply {
    warn!(
        container = %request.container_id,
        "multus-agent is not reachable: running DEL in the shim from the cache"
    );
    Engine::new(Arc::new(NoSource))
        .with_hooks(Arc::new(UnpinLinks(dirs)))
        .handle_with(request, conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpins_only_the_containers_links() {
        let bpffs = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let dirs = DataplaneDirs {
            bpffs: bpffs.path().to_owned(),
            state: state.path().to_owned(),
        };
        fs::create_dir_all(dirs.records()).unwrap();
        for (id, container) in [(1, "c1"), (2, "c2"), (3, "c1")] {
            fs::create_dir_all(dirs.link_dir(id)).unwrap();
            for hook in ["ingress", "egress"] {
                fs::write(dirs.link_dir(id).join(hook), "").unwrap();
            }
            fs::write(
                dirs.records().join(format!("{id}.json")),
                format!(r#"{{"id": {id}, "owner": {{"container_id": "{container}"}}}}"#),
            )
            .unwrap();
        }
        fs::write(dirs.records().join("junk.json"), "{").unwrap();
        let mut ids = unpin_containers(&dirs, &BTreeSet::from(["c1"])).unwrap();
        ids.sort_unstable();
        assert_eq!(ids, [1, 3]);
        assert!(!dirs.link_dir(1).exists() && !dirs.link_dir(3).exists());
        assert!(dirs.link_dir(2).join("ingress").exists());
        // Records stay for the agent.
        assert!(dirs.records().join("1.json").exists());
        // Again (a retried DEL): the pins are gone already, which is no error.
        assert!(unpin_containers(&dirs, &BTreeSet::from(["c1"])).is_ok());
    }
}
