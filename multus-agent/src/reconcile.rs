//! Removing attachments nobody will DEL: those whose network namespace or interface is gone
//! (checked at start and periodically), and, once the pod cache synced, those found at start
//! whose pod is no longer on this node.
use std::collections::BTreeSet;

use tracing::{info, warn};

use crate::{
    attachments::Attachments, dataplane::AttachmentRecord, metrics::AgentMetrics,
    source::PodPlacement,
};

/// Detaches `record` if it is still the attachment under its id (not replaced meanwhile).
fn detach_exact(attachments: &Attachments, record: &AttachmentRecord) -> bool {
    let (ids, errors) = attachments.detach_where(|r| r == record);
    for e in &errors {
        warn!(id = record.id, "detaching: {e}");
    }
    !ids.is_empty()
}

/// Detaches every attachment whose interface is gone; returns their ids.
pub fn dead_interfaces(attachments: &Attachments, metrics: &AgentMetrics) -> Vec<u32> {
    let mut removed = Vec::new();
    for record in attachments.records() {
        match attachments.is_alive(&record) {
            Ok(true) => {}
            Ok(false) => {
                if detach_exact(attachments, &record) {
                    info!(
                        id = record.id,
                        netns = %record.netns.display(),
                        ifname = %record.ifname,
                        pod = %format!("{}/{}", record.owner.namespace, record.owner.pod),
                        "removed an attachment whose interface is gone"
                    );
                    removed.push(record.id);
                }
            }
            Err(e) => {
                metrics.error("reconcile");
                warn!(id = record.id, "checking attachment: {e}");
            }
        }
    }
    removed
}

/// Detaches the attachments among `ids` whose pod is known not to be on this node.
pub fn pods_gone(
    attachments: &Attachments,
    placement: &dyn PodPlacement,
    ids: &BTreeSet<u32>,
) -> Vec<u32> {
    let mut removed = Vec::new();
    for record in attachments.records() {
        let owner = &record.owner;
        if !ids.contains(&record.id) || owner.pod.is_empty() {
            continue;
        }
        if placement.on_this_node(&owner.namespace, &owner.pod) == Some(false)
            && detach_exact(attachments, &record)
        {
            info!(
                id = record.id,
                pod = %format!("{}/{}", owner.namespace, owner.pod),
                "removed an attachment of a pod that is not on this node any more"
            );
            removed.push(record.id);
        }
    }
    removed
}
