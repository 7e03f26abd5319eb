//! Kubernetes mode's policy watches: pods in every namespace (peers are found anywhere in the
//! cluster through their network-status) and MultiNetworkPolicies. Nothing is cached here:
//! each object becomes a [`Change`] at once (the compiler's trimmed view of it), so memory
//! follows what the snapshot keeps. NADs and namespaces come from the agent's own caches
//! (`source::kube`), which forward their events the same way.
use std::{fmt::Debug, hash::Hash, pin::pin};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt as _, watcher},
};
use multus_kube::crd::v1beta2::MultiNetworkPolicy;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    changes::{self, Change, Translate},
    metrics::AgentMetrics,
};

/// Starts the pod and MultiNetworkPolicy watches on the current runtime.
pub fn start(client: &Client, tx: &mpsc::Sender<Change>, metrics: &AgentMetrics) {
    spawn(
        Api::<Pod>::all(client.clone()),
        changes::PODS,
        tx.clone(),
        metrics.clone(),
        "policy_pods",
        false,
    );
    // The API server serves v1beta1 objects as v1beta2 (the storage version).
    spawn(
        Api::<MultiNetworkPolicy>::all(client.clone()),
        changes::MNPS,
        tx.clone(),
        metrics.clone(),
        "multi_network_policies",
        true,
    );
}

/// Whether a watch failed because the resource does not exist (its CRD is not installed).
fn resource_missing(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

/// Watches `api` and sends every event as a change, until the receiver is gone. With
/// `missing_ok`, a resource that does not exist counts as listed and empty (no CRD: no such
/// objects), and the watch keeps retrying for when it appears.
pub fn spawn<K>(
    api: Api<K>,
    translate: Translate<K>,
    tx: mpsc::Sender<Change>,
    metrics: AgentMetrics,
    name: &'static str,
    missing_ok: bool,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    metrics.cache_synced(name, false);
    tokio::spawn(async move {
        let mut stream = pin!(watcher(api, watcher::Config::default()).default_backoff());
        let mut listed = false;
        let mut missing_told = false;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) if missing_ok && !listed && resource_missing(&e) => {
                    if !missing_told {
                        missing_told = true;
                        warn!(
                            watch = name,
                            "the resource does not exist (CRD not installed): none to enforce until it does"
                        );
                        metrics.cache_synced(name, true);
                        let kind = translate.kind;
                        for change in [Change::Relist(kind), Change::Listed(kind)] {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
                Err(e) => {
                    metrics.error("watch");
                    warn!(watch = name, "watch failed (retrying with backoff): {e}");
                    continue;
                }
            };
            match &event {
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => metrics.source_event(name),
                watcher::Event::InitDone => {
                    if !listed {
                        info!(watch = name, "policy watch listed");
                    }
                    listed = true;
                    metrics.cache_synced(name, true);
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
            if tx.send(translate.event(&event)).await.is_err() {
                return;
            }
        }
    });
}
