//! Kubernetes mode: reflector stores over the API server replace the per-request GETs of thin
//! mode. Pods are watched on this node only (field selector `spec.nodeName`) and trimmed to what
//! the agent reads, so memory follows the node's pod count, not the cluster's.
//!
//! A pod the cache has not seen yet (the watch lags the kubelet) is waited for briefly, then
//! read with one live GET, as Multus does; a NAD missing from the cache is read live too.
use std::{
    fmt::Debug,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodStatus};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject},
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use multus_cni::{
    kube::{KubePublisher, PodApi, convert},
    network::{NetworkAttachmentDefinition, NetworkSource, PodInfo, PodKey, SourceError},
};
use multus_kube::{
    ClientOptions, ClientSource, ErrorKind, KubeApi, PodInfo as PodInfoLive, build_client,
    crd::NetworkAttachmentDefinition as NadResource,
};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{AgentSource, PodPlacement};
use crate::{
    changes::{self, Change, PodLookup, Translate},
    kube_api::{BlockingApi, source_error},
    metrics::AgentMetrics,
    policy::PodView,
};

/// The annotation `kubectl apply` stores whole objects in: never read, often large.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A reflector store and whether it has synced.
struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
    dyntype: K::DynamicType,
}

impl<K: Resource + Clone + 'static> Cache<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new_with(name, self.dyntype.clone());
        let key = match namespace {
            Some(ns) => key.within(ns),
            None => key,
        };
        self.store.get(&key)
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// Everything a reflector task reports to.
#[derive(Clone)]
struct Reporting {
    metrics: AgentMetrics,
    changes: Arc<watch::Sender<u64>>,
    all_synced: Arc<watch::Sender<bool>>,
    flags: Arc<Vec<Arc<AtomicBool>>>,
}

/// A cache's events forwarded to policy.
type Forward<K> = Option<(mpsc::Sender<Change>, Translate<K>)>;

#[allow(
    clippy::too_many_arguments,
    reason = "one call per cache, each argument named there"
)]
fn spawn_cache<K>(
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    trim: fn(&mut K),
    name: &'static str,
    synced: Arc<AtomicBool>,
    report: Reporting,
    forward: Forward<K>,
) -> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype.clone());
    let store = writer.as_reader();
    let flag = Arc::clone(&synced);
    report.metrics.cache_synced(name, false);
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let (Some((tx, translate)), Ok(event)) = (&forward, &event) {
                // Policy gone (shutting down): the cache goes on without it.
                let _ = tx.send(translate.event(event)).await;
            }
            match event {
                Ok(watcher::Event::InitDone) => {
                    if !flag.swap(true, Ordering::AcqRel) {
                        info!(cache = name, "watch cache synced");
                    }
                    report.metrics.cache_synced(name, true);
                    let all = report.flags.iter().all(|f| f.load(Ordering::Acquire));
                    report.all_synced.send_if_modified(|s| {
                        let changed = *s != all;
                        *s = all;
                        changed
                    });
                    report.changes.send_modify(|g| *g += 1);
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    report.metrics.source_event(name);
                    report.changes.send_modify(|g| *g += 1);
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(e) => {
                    report.metrics.error("watch");
                    warn!(cache = name, "watch failed (retrying with backoff): {e}");
                }
            }
        }
    });
    Cache {
        store,
        synced,
        dyntype,
    }
}

fn trim_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// Keeps what the agent reads of a pod: metadata (annotations, labels, uid), the node, the
/// containers' names and ports, and the phase.
fn trim_pod(pod: &mut Pod) {
    trim_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        for c in &mut spec.containers {
            c.env = None;
            c.env_from = None;
            c.command = None;
            c.args = None;
            c.volume_mounts = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            c.resources = None;
            c.security_context = None;
        }
    }
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        ..PodStatus::default()
    });
}

fn trim_nad(nad: &mut DynamicObject) {
    trim_meta(&mut nad.metadata);
}

fn trim_namespace(ns: &mut Namespace) {
    trim_meta(&mut ns.metadata);
    ns.spec = None;
    ns.status = None;
}

/// The watch caches.
pub struct KubeCaches {
    pods: Cache<Pod>,
    nads: Cache<DynamicObject>,
    namespaces: Cache<Namespace>,
}

impl Debug for KubeCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCaches")
            .field("pods", &self.pods.store.len())
            .field("nads", &self.nads.store.len())
            .field("namespaces", &self.namespaces.store.len())
            .finish()
    }
}

/// The engine's source in Kubernetes mode.
#[derive(Debug)]
struct KubeSource {
    caches: Arc<KubeCaches>,
    api: Arc<BlockingApi>,
    pod_wait: Duration,
}

impl NetworkSource for KubeSource {
    fn pod(&self, key: &PodKey) -> Result<Option<PodInfo>, SourceError> {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        // Before the first sync the cache knows nothing: go straight to the API.
        let deadline = Instant::now()
            + if self.caches.pods.synced() {
                self.pod_wait
            } else {
                Duration::ZERO
            };
        loop {
            if let Some(pod) = self.caches.pods.get(Some(ns), name) {
                let info = convert::pod_object(&pod);
                let same = key
                    .uid
                    .as_deref()
                    .is_none_or(|uid| info.uid.as_deref() == Some(uid));
                // A recreated pod of the same name: wait for the cache to catch up.
                if same || info.is_static() {
                    return Ok(Some(info));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self.api.pod(ns, name)?.as_ref().map(convert::pod_info))
    }

    fn network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NetworkAttachmentDefinition>, SourceError> {
        let what = || format!("network-attachment-definition {namespace}/{name}");
        if let Some(obj) = self.caches.nads.get(Some(namespace), name) {
            let config = match obj.data.get("spec").and_then(|s| s.get("config")) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(SourceError::Invalid {
                        what: what(),
                        reason: "spec.config is not a string".to_owned(),
                    });
                }
            };
            return Ok(Some(NetworkAttachmentDefinition {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                annotations: obj.metadata.annotations.clone().unwrap_or_default(),
                config,
            }));
        }
        // Not in the cache: not synced yet, or created a moment ago. One live look.
        match self.api.api()?.get_nad(namespace, name) {
            Ok(nad) => Ok(Some(convert::nad_info(&nad))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(source_error(what(), &e)),
        }
    }
}

/// The shared publisher's view of the agent's cluster: the pod from the node's cache (the
/// object the ADD read), else from a live read of the last seconds.
#[derive(Debug)]
struct AgentPods {
    caches: Arc<KubeCaches>,
    api: Arc<BlockingApi>,
}

impl PodApi for AgentPods {
    fn api(&self) -> Option<&KubeApi> {
        self.api.api().ok()
    }

    fn read_pod(&self, key: &PodKey) -> Option<PodInfoLive> {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        if let Some(pod) = self.caches.pods.get(Some(ns), name) {
            let info = convert::pod_object(&pod);
            // A pod recreated under the same name is not the ADD's (a static pod's mirror
            // has a UID of its own).
            if key
                .uid
                .as_deref()
                .is_none_or(|uid| info.uid.as_deref() == Some(uid))
                || info.is_static()
            {
                return Some(PodInfoLive::from_pod(&pod));
            }
        }
        self.api.recent_pod(ns, name, key.uid.as_deref())
    }
}

impl PodPlacement for KubeCaches {
    fn on_this_node(&self, namespace: &str, name: &str) -> Option<bool> {
        self.pods
            .synced()
            .then(|| self.pods.get(Some(namespace), name).is_some())
    }
}

/// What [`start`] returns: the engine's source, the caches, and the client the watches use.
pub type Started = (AgentSource, Arc<KubeCaches>, Client);

/// Starts the watch caches (on the current tokio runtime) and returns the source over them.
/// With `policy`, the NAD and namespace caches forward every event there too.
pub async fn start(
    client_source: &ClientSource,
    api: Arc<BlockingApi>,
    node: &str,
    pod_wait: Duration,
    metrics: &AgentMetrics,
    policy: Option<&mpsc::Sender<Change>>,
) -> Result<Started, multus_kube::Error> {
    // Watches stay open for minutes without a byte: the read timeout must outlast them.
    let options = ClientOptions {
        read_timeout: Duration::from_secs(330),
        ..ClientOptions::default()
    };
    let client: Client = build_client(client_source, &options).await?;
    let (changes_tx, changes) = watch::channel(0u64);
    let (synced_tx, synced) = watch::channel(false);
    let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let report = Reporting {
        metrics: metrics.clone(),
        changes: Arc::new(changes_tx),
        all_synced: Arc::new(synced_tx),
        flags: Arc::new(flags.clone()),
    };
    let pods = spawn_cache(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        (),
        trim_pod,
        "pods",
        Arc::clone(&flags[0]),
        report.clone(),
        None,
    );
    let resource = ApiResource::erase::<NadResource>(&());
    let nads = spawn_cache(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        watcher::Config::default(),
        resource,
        trim_nad,
        "nads",
        Arc::clone(&flags[1]),
        report.clone(),
        policy.map(|tx| (tx.clone(), changes::NADS)),
    );
    let namespaces = spawn_cache(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        (),
        trim_namespace,
        "namespaces",
        Arc::clone(&flags[2]),
        report,
        policy.map(|tx| (tx.clone(), changes::NAMESPACES)),
    );
    let caches = Arc::new(KubeCaches {
        pods,
        nads,
        namespaces,
    });
    let source = AgentSource {
        network: Arc::new(KubeSource {
            caches: Arc::clone(&caches),
            api: Arc::clone(&api),
            pod_wait,
        }),
        publisher: Arc::new(
            KubePublisher::new(Arc::new(AgentPods {
                caches: Arc::clone(&caches),
                api,
            }))
            .on_status_written({
                let metrics = metrics.clone();
                Arc::new(move |ok| metrics.status_write(ok))
            }),
        ),
        placement: Some(Arc::clone(&caches) as Arc<dyn PodPlacement>),
        synced,
        changes,
    };
    Ok((source, caches, client))
}

/// Finds an ADD's pod for policy: the node's pod cache (the same object the engine used), else
/// one live GET.
#[derive(Debug)]
pub struct KubePods {
    caches: Arc<KubeCaches>,
    api: Arc<BlockingApi>,
}

impl KubePods {
    /// Lookups over `caches`, falling back to `api`.
    pub fn new(caches: Arc<KubeCaches>, api: Arc<BlockingApi>) -> Self {
        Self { caches, api }
    }
}

impl PodLookup for KubePods {
    fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<PodView>, SourceError> {
        if let Some(pod) = self.caches.pods.get(Some(namespace), name)
            && uid.is_none_or(|uid| pod.metadata.uid.as_deref() == Some(uid))
        {
            return Ok(Some(PodView::from_pod_info(&PodInfoLive::from_pod(&pod))));
        }
        // The engine read it live a moment ago (the watch lags): no second request.
        if let Some(pod) = self.api.recent_pod(namespace, name, uid) {
            return Ok(Some(PodView::from_pod_info(&pod)));
        }
        Ok(self
            .api
            .pod(namespace, name)?
            .map(|p| PodView::from_pod_info(&p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_pods_keep_what_the_agent_reads() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "n", "uid": "u", "labels": {"app": "x"},
                "annotations": {"k8s.v1.cni.cncf.io/networks": "a", LAST_APPLIED: "{...}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {
                "nodeName": "node-a",
                "volumes": [{"name": "v", "emptyDir": {}}],
                "containers": [{"name": "c", "image": "i", "command": ["sh"], "args": ["-c"],
                                "env": [{"name": "E", "value": "v"}],
                                "ports": [{"name": "http", "containerPort": 80}]}]
            },
            "status": {"phase": "Running", "podIP": "203.0.113.9",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        trim_pod(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "x"},
                             "annotations": {"k8s.v1.cni.cncf.io/networks": "a"}},
                "spec": {"nodeName": "node-a",
                         "containers": [{"name": "c", "image": "i",
                                         "ports": [{"name": "http", "containerPort": 80}]}]},
                "status": {"phase": "Running"}
            })
        );
    }
}
