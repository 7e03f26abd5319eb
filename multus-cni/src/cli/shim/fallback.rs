//! DEL without the agent: the engine runs in the shim's own process from the disk cache, so the
//! delegates free their interfaces and addresses even while the agent is down (Multus's shim
//! returns success instead, and leaks them).
//!
//! The eBPF attachments of the container belong to the agent. Here only their pinned TCX links
//! are removed (a pin is what keeps a link, and the program on it, alive); the attachment
//! records stay, and the agent finishes the job when it starts: it finds records whose
//! interface is gone and removes their map entries and the records themselves.
use std::{collections::BTreeSet, fs, io, sync::Arc};

use tracing::{info, warn};

use crate::{
    cni::code,
    engine::{Attachment, Engine, HookError, Hooks},
    files::remove_if_exists,
    front::{Call, Handler, Reply},
    network::NoSource,
    thick::{PinLayout, layout::LINK_DIRECTIONS, record},
};

/// Removes the link pins of every attachment owned by one of `containers`; returns the ids.
pub(crate) fn unpin_containers(
    layout: &PinLayout,
    containers: &BTreeSet<&str>,
) -> Result<Vec<u32>, String> {
    let records = layout.records();
    let identities =
        record::identities(&records).map_err(|e| format!("listing {}: {e}", records.display()))?;
    let mut unpinned = Vec::new();
    let mut errors = Vec::new();
    for record in identities {
        if !containers.contains(record.owner.container_id.as_str()) {
            continue;
        }
        match remove_link_pins(layout, record.id) {
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

fn remove_link_pins(layout: &PinLayout, id: u32) -> Result<(), String> {
    for direction in LINK_DIRECTIONS {
        let pin = layout.link(id, direction);
        remove_if_exists(&pin).map_err(|e| format!("unpinning {}: {e}", pin.display()))?;
    }
    let dir = layout.link_dir(id);
    match fs::remove_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The fallback's DEL hook: unpin the container's links before the delegates run.
struct UnpinLinks(PinLayout);

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

/// DEL in the shim's process: the engine with no network source (DEL reads only the cache)
/// and a hook that unpins the container's eBPF links. Reached through [`crate::front::serve`].
pub(crate) struct FallbackDel(pub(crate) PinLayout);

impl Handler for FallbackDel {
    fn run(&self, call: &Call) -> Reply {
        warn!(
            container = %call.request.container_id,
            "multus-agent is not reachable: running DEL in the shim from the cache"
        );
        Engine::new(Arc::new(NoSource))
            .with_hooks(Arc::new(UnpinLinks(self.0.clone())))
            .handle(&call.request, &call.conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpins_only_the_containers_links() {
        let bpffs = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let dirs = PinLayout::new(bpffs.path(), state.path());
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
