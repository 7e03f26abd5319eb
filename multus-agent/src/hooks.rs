//! The engine hooks of thick mode: before ADD answers, each secondary interface's policy is
//! compiled and the dataplane is attached with it in force (fail closed: a failure fails the
//! ADD and the engine rolls the delegates back); DEL detaches the container's attachments
//! before the delegates run.
use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use multus_cni::{
    cni::code,
    engine::{Attachment, HookError, Hooks},
};

use crate::{
    attachments::Attachments,
    dataplane::{AttachRequest, AttachmentOwner},
    enforce::{Enforcer, NewAttachment, PrepareError},
    policy::ObjectKey,
};

/// How long an ADD waits for the policy inputs' first listing before "try again later".
const POLICY_SYNC_WAIT: Duration = Duration::from_secs(10);

/// The agent's [`Hooks`].
#[derive(Debug, Clone)]
pub struct AgentHooks {
    attachments: Arc<Attachments>,
    enforcer: Option<Arc<Enforcer>>,
}

impl AgentHooks {
    /// Hooks over `attachments`; with `enforcer`, every new interface gets its policy.
    pub fn new(attachments: Arc<Attachments>, enforcer: Option<Arc<Enforcer>>) -> Self {
        Self {
            attachments,
            enforcer,
        }
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

/// What policy needs of an attachment; `None` when it cannot have a policy (no pod, or a
/// network that is not a NAD).
fn new_attachment(a: &Attachment) -> Option<NewAttachment<'_>> {
    let pod = a.pod.as_ref()?;
    Some(NewAttachment {
        container: &a.container_id,
        pod: (&pod.namespace, &pod.name, pod.uid.as_deref()),
        network: ObjectKey::parse(&a.network)?,
        netns: a.netns.as_deref()?,
        ifname: &a.ifname,
        ips: a
            .ips
            .iter()
            .map(ipnet::IpNet::addr)
            .collect::<Vec<IpAddr>>(),
        mac: a.mac.as_deref().and_then(|m| m.parse().ok()),
    })
}

fn prepare_error(e: &PrepareError) -> HookError {
    let code = match e {
        PrepareError::NotSynced | PrepareError::Pod { .. } => code::TRY_AGAIN_LATER,
        PrepareError::Compile(_) => code::INVALID_CONFIG,
        PrepareError::Interface { .. } | PrepareError::NoMac { .. } => code::PLUGIN_FAILED,
    };
    HookError {
        code,
        message: format!("policy: {e}"),
    }
}

impl Hooks for AgentHooks {
    fn after_add(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        // The cluster network is the primary CNI's interface: not ours to police or count.
        let ours: Vec<&Attachment> = attachments
            .iter()
            .filter(|a| !a.cluster && a.netns.is_some())
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        let prepared = match &self.enforcer {
            Some(enforcer) => {
                let new: Vec<Option<NewAttachment<'_>>> =
                    ours.iter().map(|a| new_attachment(a)).collect();
                Some(
                    enforcer
                        .prepare(&new, POLICY_SYNC_WAIT)
                        .map_err(|e| prepare_error(&e))?,
                )
            }
            None => None,
        };
        let sources: Vec<Option<String>> = (0..ours.len())
            .map(|i| prepared.as_ref().and_then(|p| p.policy_source(i)))
            .collect();
        let requests: Vec<AttachRequest<'_>> = ours
            .iter()
            .zip(&sources)
            .enumerate()
            .filter_map(|(i, (a, source))| {
                a.netns.as_deref().map(|netns| AttachRequest {
                    netns,
                    ifname: &a.ifname,
                    owner: owner(a),
                    policy: prepared.as_ref().and_then(|p| p.policy(i)),
                    policy_source: source.as_deref(),
                })
            })
            .collect();
        let result = self.attachments.attach_all(&requests);
        match (&self.enforcer, prepared, result) {
            (Some(enforcer), Some(prepared), Ok(records)) => {
                enforcer.commit(prepared, &records);
                Ok(())
            }
            (Some(enforcer), Some(prepared), Err(message)) => {
                enforcer.abort(prepared);
                Err(HookError {
                    code: code::PLUGIN_FAILED,
                    message,
                })
            }
            (_, _, result) => result.map(drop).map_err(|message| HookError {
                code: code::PLUGIN_FAILED,
                message,
            }),
        }
    }

    fn on_del(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        let containers: BTreeSet<&str> = attachments
            .iter()
            .map(|a| a.container_id.as_str())
            .collect();
        let result = self.attachments.detach_containers(&containers);
        if let Some(enforcer) = &self.enforcer {
            enforcer.forget_containers(&containers);
        }
        result.map(drop).map_err(|message| HookError {
            code: code::IO_FAILURE,
            message,
        })
    }
}
