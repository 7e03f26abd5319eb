//! A small blocking facade over the API calls the synchronous CNI engine makes: read the pod and
//! its NADs, write the network-status annotation, post Events. It owns a current-thread tokio
//! runtime, so callers stay free of async.
//!
//! Every call is bounded: each attempt has a timeout, transient failures (unreachable, timeouts,
//! 429/5xx) are retried with backoff within a total budget, and a pod that is not visible yet
//! (informer lag, a fresh sandbox) is waited for in 50-250 ms steps, as Multus does.
use std::{collections::BTreeMap, future::Future, time::Duration};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource as _,
    api::{ApiResource, DynamicObject, PostParams},
};
use tokio::runtime::Runtime;

use crate::{
    client::{ClientOptions, ClientSource, build_client},
    crd::{NetworkAttachmentDefinition, RESOURCE_NAME_ANNOTATION, nad_from_value},
    error::{Error, ErrorKind, classify},
};

/// The pod annotation the network-status list is written to.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The component name Events are reported from.
pub const EVENT_COMPONENT: &str = "multus";

/// Bounds of the facade's calls.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Client timeouts.
    pub client: ClientOptions,
    /// Limit for one attempt of one call.
    pub attempt_timeout: Duration,
    /// Total time spent retrying transient failures of one call.
    pub retry_budget: Duration,
    /// Total time a pod that is not visible yet is waited for.
    pub pod_wait: Duration,
    /// Attempts of the status write when it loses the optimistic-concurrency race (409).
    pub conflict_attempts: u32,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            attempt_timeout: Duration::from_secs(10),
            retry_budget: Duration::from_secs(20),
            pod_wait: Duration::from_secs(3),
            conflict_attempts: 5,
        }
    }
}

/// A container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    /// The container it belongs to.
    pub container: String,
    /// Its name, if any (named ports in policies refer to it).
    pub name: Option<String>,
    /// The port number.
    pub port: i32,
    /// TCP, UDP or SCTP.
    pub protocol: String,
}

/// What the engine needs from a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The node it is scheduled to.
    pub node_name: Option<String>,
    /// Ports declared by its containers.
    pub container_ports: Vec<ContainerPort>,
}

impl PodInfo {
    /// The fields of a typed pod object (from a watch, or a file); a missing namespace is
    /// `default`.
    pub fn from_pod(pod: &Pod) -> Self {
        pod_info(
            pod,
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

/// What the engine needs from a NetworkAttachmentDefinition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NadInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (for Events about it).
    pub uid: String,
    /// `spec.config`, when present.
    pub config: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl NadInfo {
    /// The device-plugin resource named by `k8s.v1.cni.cncf.io/resourceName`, if any.
    pub fn resource_name(&self) -> Option<&str> {
        self.annotations
            .get(RESOURCE_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

/// The object an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTarget {
    /// `v1` or `k8s.cni.cncf.io/v1`.
    pub api_version: String,
    /// `Pod` or `NetworkAttachmentDefinition`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when known.
    pub uid: Option<String>,
}

impl EventTarget {
    /// A pod.
    pub fn pod(pod: &PodInfo) -> Self {
        Self {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: Some(pod.uid.clone()),
        }
    }

    /// A NetworkAttachmentDefinition.
    pub fn nad(nad: &NadInfo) -> Self {
        Self {
            api_version: NetworkAttachmentDefinition::api_version(&()).into_owned(),
            kind: NetworkAttachmentDefinition::kind(&()).into_owned(),
            namespace: nad.namespace.clone(),
            name: nad.name.clone(),
            uid: Some(nad.uid.clone()),
        }
    }
}

/// `Normal` or `Warning`, the two Event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something the user should look at (an invalid annotation, a missing network).
    Warning,
}

/// The blocking API facade.
pub struct KubeApi {
    runtime: Runtime,
    client: Client,
    opts: ApiOptions,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// Connects (lazily: no request is made yet) with a client from `source`.
    pub fn new(source: &ClientSource, opts: ApiOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let client = runtime.block_on(build_client(source, &opts.client))?;
        Ok(Self {
            runtime,
            client,
            opts,
        })
    }

    /// Reads a pod, waiting up to `pod_wait` while it is not visible yet.
    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let object = format!("{namespace}/{name}");
        let pod = self.call("get pod", &object, true, || api.get(name))?;
        Ok(pod_info(&pod, namespace, name))
    }

    /// Reads a NetworkAttachmentDefinition.
    pub fn get_nad(&self, namespace: &str, name: &str) -> Result<NadInfo, Error> {
        // Read untyped first: a NAD without `spec` is valid (the config is then on disk).
        let resource = ApiResource::erase::<NetworkAttachmentDefinition>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let object = format!("{namespace}/{name}");
        let raw = self.call("get network-attachment-definition", &object, false, || {
            api.get(name)
        })?;
        let nad = serde_json::to_value(raw)
            .and_then(nad_from_value)
            .map_err(|e| Error::Api {
                op: "get network-attachment-definition",
                object: object.clone(),
                kind: ErrorKind::Other,
                message: format!("invalid object: {e}"),
            })?;
        Ok(NadInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: nad.metadata.uid.clone().unwrap_or_default(),
            config: nad.spec.config.clone(),
            annotations: nad.metadata.annotations.clone().unwrap_or_default(),
        })
    }

    /// Writes `status` (the JSON list) as the pod's network-status annotation through the
    /// status subresource: read, set, replace with the read resourceVersion, and start over on a
    /// 409 conflict. With `expected_uid`, a pod recreated under the same name is not touched.
    ///
    /// The pod travels as raw JSON, not as k8s-openapi's typed Pod: a status field newer than
    /// the compiled-in API version would otherwise be dropped from the PUT and wiped.
    pub fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        expected_uid: Option<&str>,
        status: &str,
    ) -> Result<(), Error> {
        let resource = ApiResource::erase::<Pod>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let object = format!("{namespace}/{name}");
        let attempts = self.opts.conflict_attempts.max(1);
        let params = PostParams::default();
        for attempt in 1..=attempts {
            let mut pod = self.call("get pod", &object, false, || api.get(name))?;
            if let Some(expected) = expected_uid
                && pod.metadata.uid.as_deref() != Some(expected)
            {
                return Err(Error::Api {
                    op: "write network-status",
                    object,
                    kind: ErrorKind::NotFound,
                    message: format!(
                        "the pod was replaced (uid {}, expected {expected})",
                        pod.metadata.uid.as_deref().unwrap_or("none")
                    ),
                });
            }
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(NETWORK_STATUS_ANNOTATION.to_owned(), status.to_owned());
            let result = self.call("write network-status", &object, false, || {
                api.replace_status(name, &params, &pod)
            });
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < attempts => {
                    tracing::debug!(pod = %object, attempt, "network-status write conflicted; retrying");
                    let pause = Duration::from_millis(10 * u64::from(attempt));
                    self.runtime
                        .block_on(async { tokio::time::sleep(pause).await });
                }
                Err(e) => return Err(e),
            }
        }
        // The loop returns on its last attempt.
        Err(Error::Api {
            op: "write network-status",
            object,
            kind: ErrorKind::Conflict,
            message: "no attempt was made".to_owned(),
        })
    }

    /// Posts an Event about `target` (reported by component `multus`).
    pub fn post_event(
        &self,
        target: &EventTarget,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let now = Timestamp::now();
        // Unique like client-go's recorder: object name plus a nanosecond stamp.
        let name = format!("{}.{:x}", target.name, now.as_nanosecond());
        self.post_event_named(target, &name, event_type, reason, message)
    }

    /// Posts an Event named `name`. Reporters that may all see the same problem (every node's
    /// agent) give it the same name, so the server keeps one: a name that exists already is
    /// an error of kind [`ErrorKind::Conflict`].
    pub fn post_event_named(
        &self,
        target: &EventTarget,
        name: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &target.namespace);
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(target.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(target.api_version.clone()),
                kind: Some(target.kind.clone()),
                namespace: Some(target.namespace.clone()),
                name: Some(target.name.clone()),
                uid: target.uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(
                match event_type {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            source: Some(EventSource {
                component: Some(EVENT_COMPONENT.to_owned()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        let object = format!("{}/{} ({})", target.namespace, target.name, target.kind);
        let params = PostParams::default();
        self.call("post event", &object, false, || api.create(&params, &event))
            .map(drop)
    }

    /// Runs one API call with the facade's bounds: per-attempt timeout, retries of transient
    /// failures within the budget, and (with `wait_visible`) retries of 404 within `pod_wait`.
    fn call<T, F, Fut>(
        &self,
        op: &'static str,
        object: &str,
        wait_visible: bool,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        self.runtime.block_on(async {
            let started = tokio::time::Instant::now();
            let mut not_found_delay = Duration::from_millis(50);
            let mut transient_delay = Duration::from_millis(100);
            let mut tries = 0u32;
            loop {
                tries += 1;
                let (kind, message) =
                    match tokio::time::timeout(self.opts.attempt_timeout, attempt()).await {
                        Ok(Ok(value)) => return Ok(value),
                        Ok(Err(e)) => classify(&e),
                        Err(_) => (
                            ErrorKind::Unavailable,
                            format!("no answer within {:?}", self.opts.attempt_timeout),
                        ),
                    };
                let elapsed = started.elapsed();
                let delay = match kind {
                    ErrorKind::NotFound if wait_visible && elapsed < self.opts.pod_wait => {
                        let d = not_found_delay;
                        not_found_delay = (not_found_delay * 2).min(Duration::from_millis(250));
                        d
                    }
                    ErrorKind::Unavailable if elapsed < self.opts.retry_budget => {
                        let d = transient_delay;
                        transient_delay = (transient_delay * 2).min(Duration::from_secs(2));
                        d
                    }
                    _ => {
                        return Err(Error::Api {
                            op,
                            object: object.to_owned(),
                            kind,
                            message: if tries > 1 {
                                format!("{message} (after {tries} attempts in {elapsed:.1?})")
                            } else {
                                message
                            },
                        });
                    }
                };
                tracing::debug!(op, object, %kind, %message, tries, "retrying");
                tokio::time::sleep(delay).await;
            }
        })
    }
}

fn pod_info(pod: &Pod, namespace: &str, name: &str) -> PodInfo {
    let container_ports = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| {
            c.ports.iter().flatten().map(|p| ContainerPort {
                container: c.name.clone(),
                name: p.name.clone(),
                port: p.container_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
            })
        })
        .collect();
    PodInfo {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        container_ports,
    }
}
