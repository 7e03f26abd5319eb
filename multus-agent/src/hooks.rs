//! The engine hooks of thick mode: before ADD answers, the dataplane is attached to every
//! secondary interface (fail closed: an attach failure fails the ADD and the engine rolls the
//! delegates back); DEL detaches the container's attachments before the delegates run.
use std::{collections::BTreeSet, sync::Arc};

use multus_cni::{
    cni::code,
    engine::{Attachment, HookError, Hooks},
};

use crate::{
    attachments::{Attachments, Target},
    dataplane::AttachmentOwner,
};

/// The agent's [`Hooks`].
#[derive(Debug, Clone)]
pub struct AgentHooks {
    attachments: Arc<Attachments>,
}

impl AgentHooks {
    /// Hooks over `attachments`.
    pub fn new(attachments: Arc<Attachments>) -> Self {
        Self { attachments }
    }
}

/// The owner fields of an attachment the engine made.
pub fn owner(a: &Attachment) -> AttachmentOwner {
    AttachmentOwner {
        namespace: a
            .pod
            .as_ref()
            .map(|p| p.namespace.clone())
            .unwrap_or_default(),
        pod: a.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        network: a.network.clone(),
        container_id: a.container_id.clone(),
    }
}

impl Hooks for AgentHooks {
    fn after_add(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        // The cluster network is the primary CNI's interface: not ours to police or count.
        let targets: Vec<Target<'_>> = attachments
            .iter()
            .filter(|a| !a.cluster)
            .filter_map(|a| {
                a.netns.as_deref().map(|netns| Target {
                    netns,
                    ifname: &a.ifname,
                    owner: owner(a),
                })
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        self.attachments
            .attach_all(&targets)
            .map(drop)
            .map_err(|message| HookError {
                code: code::PLUGIN_FAILED,
                message,
            })
    }

    fn on_del(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        let containers: BTreeSet<&str> = attachments
            .iter()
            .map(|a| a.container_id.as_str())
            .collect();
        self.attachments
            .detach_containers(&containers)
            .map(drop)
            .map_err(|message| HookError {
                code: code::IO_FAILURE,
                message,
            })
    }
}
