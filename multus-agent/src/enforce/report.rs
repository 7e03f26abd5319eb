//! Reporting invalid policy objects where their authors look: a Warning Event on the object
//! (Kubernetes mode). Events are posted from a thread of their own, so a slow or unreachable
//! API server never holds up policy updates; when it falls behind, reports are dropped (the log
//! line and the metric already went out).
use std::sync::{Arc, mpsc};

use multus_kube::{EventTarget, EventType};
use tracing::{debug, warn};

use super::change::Kind;
use crate::{policy::ObjectKey, source::kube::BlockingApi};

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
    /// Its API version.
    pub api_version: String,
    /// What is wrong (names the object, the field and the reason).
    pub message: String,
}

impl Problem {
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
    match api.post_event(&target, EventType::Warning, INVALID_POLICY_REASON, &message) {
        Ok(()) => debug!(object = %problem.key, kind = problem.kind_name(), "Event posted"),
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
    fn messages_are_cut_on_character_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: a cut in its middle backs off.
        assert_eq!(truncate("aé", 2), "a");
    }
}
