//! [`KubePublisher`]: the one publisher of both modes. After ADD it writes the network-status
//! annotation and posts the pod's Events (Multus's `AddedInterface`, the Warnings of a refused
//! request, a Warning per request no plugin could take); [`Publisher::warning`] posts any other
//! Warning on a pod. None of it can fail the pod: a failed write is logged (and counted where
//! the embedder counts) and the pod keeps its interfaces.
//!
//! Thin mode reaches the API through its per-run [`Cluster`]; the agent through its watch
//! caches and long-lived client. Both implement [`PodApi`].
use std::sync::Arc;

use multus_kube::{EventTarget, EventType, KubeApi, PodInfo};
use tracing::{debug, info, warn};

use super::{Cluster, convert, events};
use crate::{
    NetConf,
    cni::Request,
    engine::{AbandonedDel, AddOutput, Publisher},
    error::Error,
    network::PodKey,
};

/// Where a [`KubePublisher`] finds the API server and the pod an ADD was for.
pub trait PodApi: Send + Sync {
    /// The API facade; `None` when none can be built (the reason is logged by the caller).
    fn api(&self) -> Option<&KubeApi>;

    /// The pod of `key` as the ADD read it; `None` when the ADD did not read it (nothing is
    /// written then: there is no pod object to write to).
    fn read_pod(&self, key: &PodKey) -> Option<PodInfo>;
}

impl PodApi for Cluster {
    fn api(&self) -> Option<&KubeApi> {
        Self::api(self)
            .inspect_err(|e| debug!("no Kubernetes client: {e}"))
            .ok()
    }

    fn read_pod(&self, key: &PodKey) -> Option<PodInfo> {
        self.known_pod(&key.namespace, &key.name)
    }
}

/// Called with `true` or `false` after each network-status write.
pub type StatusWritten = Arc<dyn Fn(bool) + Send + Sync>;

/// Writes network-status and posts Events through a [`PodApi`].
#[derive(Clone)]
pub struct KubePublisher {
    pods: Arc<dyn PodApi>,
    status_written: Option<StatusWritten>,
}

impl std::fmt::Debug for KubePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePublisher").finish_non_exhaustive()
    }
}

impl KubePublisher {
    /// A publisher over `pods` (thin mode: the run's [`Cluster`]).
    pub fn new(pods: Arc<dyn PodApi>) -> Self {
        Self {
            pods,
            status_written: None,
        }
    }

    /// Reports every network-status write's outcome to `f` (the agent's counter).
    pub fn on_status_written(mut self, f: StatusWritten) -> Self {
        self.status_written = Some(f);
        self
    }

    /// The pod the ADD was for, if the ADD read it from the API (and with it the facade).
    fn pod(&self, request: &Request) -> Option<(&KubeApi, PodInfo)> {
        let (namespace, name) = request.args.pod()?;
        let key = PodKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: request.args.pod_uid.clone(),
        };
        let pod = self.pods.read_pod(&key)?;
        let api = self.pods.api()?;
        Some((api, pod))
    }

    fn post(&self, api: &KubeApi, on: &EventTarget, event: &events::PodEvent) -> bool {
        match api.post_event(on, event.event_type, event.reason, &event.message) {
            Ok(()) => {
                debug!(reason = event.reason, "Event posted on the pod");
                true
            }
            Err(e) => {
                warn!(
                    pod = %format!("{}/{}", on.namespace, on.name),
                    error = %e,
                    reason = event.reason,
                    "posting an Event failed"
                );
                false
            }
        }
    }
}

impl Publisher for KubePublisher {
    fn added(&self, request: &Request, conf: &NetConf, output: &AddOutput) {
        let Some((api, pod)) = self.pod(request) else {
            debug!("no pod object was read; network-status is not written");
            return;
        };
        let target = format!("{}/{}", pod.namespace, pod.name);
        let status = convert::network_status_json(&output.network_status);
        // The UID read at lookup: a pod recreated under the same name meanwhile is left alone.
        let written = api.set_network_status(&pod.namespace, &pod.name, Some(&pod.uid), &status);
        if let Some(f) = &self.status_written {
            f(written.is_ok());
        }
        if let Err(e) = written {
            warn!(pod = %target, error = %e, "network-status write failed; the pod keeps its interfaces");
            // The server just failed a write: do not spend more time on Events.
            return;
        }
        info!(pod = %target, "network-status written");
        let on = EventTarget::pod(&pod);
        let mut posts = events::warnings(output);
        if conf.added_interface_events {
            posts.extend(events::added_interfaces(output));
        }
        for event in &posts {
            // Best effort: the first failure ends the Events of this ADD.
            if !self.post(api, &on, event) {
                return;
            }
        }
    }

    fn del_abandoned(&self, abandoned: &AbandonedDel) {
        // DEL reads no pod: the Event goes to the pod the cache names (usually being deleted,
        // which the API server accepts; `kubectl get events` still shows it).
        if let Some(pod) = &abandoned.pod {
            self.warning(pod, events::FAILED_NETWORK_TEARDOWN, &abandoned.message());
        }
    }

    fn add_failed(&self, request: &Request, error: &Error) {
        let Some(event) = events::for_add_error(error) else {
            return;
        };
        let Some((api, pod)) = self.pod(request) else {
            return;
        };
        self.post(api, &EventTarget::pod(&pod), &event);
    }

    fn warning(&self, pod: &PodKey, reason: &'static str, message: &str) {
        let Some(api) = self.pods.api() else {
            return;
        };
        // The key's UID when the runtime gave one (Events on a pod that is gone are harmless).
        let on = EventTarget {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        self.post(
            api,
            &on,
            &events::PodEvent::new(EventType::Warning, reason, message.to_owned()),
        );
    }
}
