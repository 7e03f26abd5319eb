//! [`KubePublisher`]: after ADD, the network-status annotation and Events on the pod. Neither
//! can fail the pod: a failed write is logged (thin mode has no counter to bump) and the pod
//! keeps its interfaces.
use std::sync::Arc;

use multus_kube::{EventTarget, KubeApi, PodInfo};
use tracing::{debug, info, warn};

use super::{Cluster, convert, events};
use crate::{
    cni::Request,
    engine::{AbandonedDel, AddOutput, Publisher},
    error::Error,
};

/// Writes network-status and posts Events through the cluster the ADD read the pod from.
#[derive(Debug, Clone)]
pub struct KubePublisher {
    cluster: Arc<Cluster>,
    added_interface_events: bool,
}

impl KubePublisher {
    /// A publisher for `cluster`, posting `AddedInterface` Events after a successful ADD.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            added_interface_events: true,
        }
    }

    /// Without the `AddedInterface` Events (one API request each).
    pub fn without_added_interface_events(mut self) -> Self {
        self.added_interface_events = false;
        self
    }

    /// The pod the ADD was for, if the ADD read it from the API (and with it the facade).
    fn pod(&self, request: &Request) -> Option<(&KubeApi, PodInfo)> {
        let (namespace, name) = request.args.pod()?;
        let pod = self.cluster.known_pod(namespace, name)?;
        let api = self.cluster.api().ok()?;
        Some((api, pod))
    }
}

impl Publisher for KubePublisher {
    fn added(&self, request: &Request, output: &AddOutput) {
        let Some((api, pod)) = self.pod(request) else {
            debug!("no pod object was read; network-status is not written");
            return;
        };
        let target = format!("{}/{}", pod.namespace, pod.name);
        let status = convert::network_status_json(&output.network_status);
        // The UID read at lookup: a pod recreated under the same name meanwhile is left alone.
        if let Err(e) = api.set_network_status(&pod.namespace, &pod.name, Some(&pod.uid), &status) {
            warn!(pod = %target, error = %e, "network-status write failed; the pod keeps its interfaces");
            // The server just failed a write: do not spend more time on Events.
            return;
        }
        info!(pod = %target, "network-status written");
        if !self.added_interface_events {
            return;
        }
        let on = EventTarget::pod(&pod);
        for event in events::added_interfaces(output) {
            // Best effort: the first failure ends the Events of this ADD.
            if let Err(e) = api.post_event(&on, event.event_type, event.reason, &event.message) {
                warn!(pod = %target, error = %e, reason = event.reason, "posting an Event failed");
                return;
            }
        }
    }

    fn del_abandoned(&self, abandoned: &AbandonedDel) {
        // DEL reads no pod: the Event goes to the pod the cache names (usually being deleted,
        // which the API server accepts; `kubectl get events` still shows it).
        let Some(pod) = &abandoned.pod else {
            return;
        };
        let api = match self.cluster.api() {
            Ok(api) => api,
            Err(e) => {
                warn!(error = %e, "no client to post the FailedNetworkTeardown Event");
                return;
            }
        };
        let on = EventTarget {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        let event = events::for_abandoned_del(abandoned);
        if let Err(e) = api.post_event(&on, event.event_type, event.reason, &event.message) {
            warn!(
                pod = %format!("{}/{}", pod.namespace, pod.name),
                error = %e,
                reason = event.reason,
                "posting an Event failed"
            );
        }
    }

    fn add_failed(&self, request: &Request, error: &Error) {
        let Some(event) = events::for_add_error(error) else {
            return;
        };
        let Some((api, pod)) = self.pod(request) else {
            return;
        };
        let on = EventTarget::pod(&pod);
        match api.post_event(&on, event.event_type, event.reason, &event.message) {
            Ok(()) => debug!(reason = event.reason, "Event posted on the pod"),
            Err(e) => warn!(
                pod = %format!("{}/{}", pod.namespace, pod.name),
                error = %e,
                reason = event.reason,
                "posting an Event failed"
            ),
        }
    }
}
