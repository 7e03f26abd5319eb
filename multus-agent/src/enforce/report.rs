//! Reporting invalid policy objects where their authors look: a Warning Event on the object
//! (Kubernetes mode). Events are posted from a thread of their own, so a slow or unreachable
//! API server never holds up policy updates; when it falls behind, reports are dropped (the log
//! line and the metric already went out).
//!
//! Every node's agent sees the same objects and so the same problems: the Event's name is
//! derived from the object (kind and UID) and the message, so all agents, whenever they start,
//! post the same Event and the API server keeps the first (the others get "already exists").
//! A problem is therefore reported once per object for as long as the server keeps Events
//! (`--event-ttl`, one hour by default); another problem gets an Event of its own.
use std::sync::{Arc, mpsc};

use multus_kube::{EventTarget, EventType};
use tracing::{debug, warn};

use crate::{changes::Kind, kube_api::BlockingApi, policy::ObjectKey};

/// The Event reason of an invalid NAD policy annotation or MultiNetworkPolicy.
pub const INVALID_POLICY_REASON: &str = "InvalidPolicy";

/// Event messages are cut to this many bytes (the events API's note limit).
const MAX_MESSAGE: usize = 1024;

/// Reports waiting to be posted before new ones are dropped.
const QUEUE: usize = 256;

/// An invalid policy object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// NAD or MultiNetworkPolicy.
    pub kind: Kind,
    /// The object.
    pub key: ObjectKey,
    /// Its UID, when known.
    pub uid: Option<String>,
    /// The resourceVersion the problem was seen in (logs).
    pub resource_version: Option<String>,
    /// Its API version.
    pub api_version: String,
    /// What is wrong (names the object, the field and the reason).
    pub message: String,
}

impl Problem {
    /// The Event's name: the object's, then a hash of what identifies this problem.
    pub fn event_name(&self) -> String {
        let mut hash = Fnv::default();
        for part in [
            self.kind_name(),
            self.uid.as_deref().unwrap_or_default(),
            &self.message,
        ] {
            hash.write(part.as_bytes());
            hash.write(&[0]);
        }
        format!("{}.policy-{:016x}", self.key.name, hash.0)
    }

    /// The object's kind as the API names it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Nad => "NetworkAttachmentDefinition",
            Kind::Mnp => "MultiNetworkPolicy",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
        }
    }
}

/// FNV-1a (64 bits): stable across builds and processes, unlike the standard library's
/// hasher, so every agent derives the same name.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Where problems go besides the log and the metric.
pub trait ProblemReporter: Send + Sync {
    /// Reports one problem; must not block.
    fn report(&self, problem: Problem);
}

/// Posts a Warning Event per problem through the API.
#[derive(Debug)]
pub struct KubeEvents {
    queue: mpsc::SyncSender<Problem>,
}

impl KubeEvents {
    /// Starts the posting thread.
    pub fn start(api: Arc<BlockingApi>) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::sync_channel::<Problem>(QUEUE);
        std::thread::Builder::new()
            .name("policy-events".to_owned())
            .spawn(move || {
                for problem in rx {
                    post(&api, &problem);
                }
            })?;
        Ok(Self { queue })
    }
}

fn post(api: &BlockingApi, problem: &Problem) {
    let target = EventTarget {
        api_version: problem.api_version.clone(),
        kind: problem.kind_name().to_owned(),
        namespace: problem.key.namespace.clone(),
        name: problem.key.name.clone(),
        uid: problem.uid.clone(),
    };
    let message = truncate(&problem.message, MAX_MESSAGE);
    match api.post_event(
        &target,
        &problem.event_name(),
        EventType::Warning,
        (INVALID_POLICY_REASON, &message),
    ) {
        Ok(true) => debug!(object = %problem.key, kind = problem.kind_name(), "Event posted"),
        Ok(false) => debug!(object = %problem.key, "Event already posted (by another node)"),
        Err(e) => warn!(object = %problem.key, "posting the InvalidPolicy Event failed: {e}"),
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl ProblemReporter for KubeEvents {
    fn report(&self, problem: Problem) {
        if let Err(mpsc::TrySendError::Full(p)) = self.queue.try_send(problem) {
            warn!(object = %p.key, "too many Events waiting; this one is dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_stable_and_tell_problems_apart() {
        let problem = Problem {
            kind: Kind::Nad,
            key: ObjectKey::new("ns", "blue"),
            uid: Some("u1".into()),
            resource_version: Some("7".into()),
            api_version: "k8s.cni.cncf.io/v1".into(),
            message: "bad".into(),
        };
        let name = problem.event_name();
        assert!(name.starts_with("blue.policy-"), "{name}");
        assert_eq!(name.len(), "blue.policy-".len() + 16);
        // The same on every node, every run, in every version of the object.
        assert_eq!(name, "blue.policy-15688bfc9abf3b62");
        let later = Problem {
            resource_version: Some("8".into()),
            ..problem.clone()
        };
        assert_eq!(later.event_name(), name);
        let recreated = Problem {
            uid: Some("u2".into()),
            ..problem.clone()
        };
        assert_ne!(recreated.event_name(), name);
        let other = Problem {
            message: "worse".into(),
            ..problem
        };
        assert_ne!(other.event_name(), name);
    }

    #[test]
    fn messages_are_cut_on_character_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: a cut in its middle backs off.
        assert_eq!(truncate("aé", 2), "a");
    }
}
