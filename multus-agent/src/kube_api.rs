//! The blocking Kubernetes API facade the agent's threads share: live GETs for the engine's
//! source and policy, status writes, and the Events on invalid policy objects.
use std::{
    collections::VecDeque,
    fmt::Debug,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use multus_cni::{kube::convert, network::SourceError};
use multus_kube::{
    ApiOptions, ClientSource, ErrorKind, EventTarget, EventType, KubeApi, PodInfo as PodInfoLive,
};
use tracing::warn;

/// The blocking API facade, for live GETs and status writes from the engine's threads.
///
/// [`KubeApi`] owns a tokio runtime, which must not be dropped on an async thread: dropping
/// this hands it to a plain thread of its own.
pub struct BlockingApi {
    api: Option<KubeApi>,
    /// Pods read live lately: the ADD that read one asks for it again for policy.
    recent: Mutex<VecDeque<(Instant, PodInfoLive)>>,
}

/// Live reads remembered, and for how long.
const RECENT_PODS: usize = 16;
const RECENT_POD_AGE: Duration = Duration::from_secs(30);

impl Debug for BlockingApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingApi")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl BlockingApi {
    /// Connects (lazily). Call it outside any async runtime.
    pub fn new(source: &ClientSource) -> Result<Self, multus_kube::Error> {
        let opts = ApiOptions {
            // The watch cache already waited for the pod; this is the last look.
            pod_wait: Duration::from_millis(500),
            retry_budget: Duration::from_secs(5),
            ..ApiOptions::default()
        };
        KubeApi::new(source, opts).map(|api| Self {
            api: Some(api),
            recent: Mutex::default(),
        })
    }

    /// The client; an error once it is shutting down.
    pub fn api(&self) -> Result<&KubeApi, SourceError> {
        self.api.as_ref().ok_or_else(|| SourceError::Unavailable {
            what: "the Kubernetes API".to_owned(),
            reason: "the client is shutting down".to_owned(),
        })
    }

    /// Reads a pod live (blocking); `None` when it does not exist.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodInfoLive>, SourceError> {
        match self.api()?.get_pod(namespace, name) {
            Ok(pod) => {
                let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
                if recent.len() == RECENT_PODS {
                    recent.pop_front();
                }
                recent.push_back((Instant::now(), pod.clone()));
                Ok(Some(pod))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(source_error(format!("pod {namespace}/{name}"), &e)),
        }
    }

    /// A pod read live in the last seconds (with `uid`, when given).
    pub fn recent_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Option<PodInfoLive> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .rev()
            .find(|(at, p)| {
                at.elapsed() < RECENT_POD_AGE
                    && p.namespace == namespace
                    && p.name == name
                    && uid.is_none_or(|uid| p.uid == uid)
            })
            .map(|(_, p)| p.clone())
    }

    /// Posts an Event named `name` (blocking; within the client's retry budget). `Ok(false)`:
    /// an Event of that name exists already.
    pub fn post_event(
        &self,
        target: &EventTarget,
        name: &str,
        event_type: EventType,
        (reason, message): (&str, &str),
    ) -> Result<bool, String> {
        match self
            .api()
            .map_err(|e| e.to_string())?
            .post_event_named(target, name, event_type, reason, message)
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for BlockingApi {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            // If the thread cannot start, leaking the client is better than a panic.
            if let Err(e) = std::thread::Builder::new().spawn(move || drop(api)) {
                warn!("dropping the Kubernetes client: {e}");
            }
        }
    }
}

/// As thin mode maps API errors ([`convert::source_error`]), except that a refused token is
/// "try again later": the agent's projected token is rotated by kubelet and heals by itself.
pub fn source_error(what: String, e: &multus_kube::Error) -> SourceError {
    match e.kind() {
        ErrorKind::Unauthorized => SourceError::Unavailable {
            what,
            reason: e.to_string(),
        },
        _ => convert::source_error(what, e),
    }
}
