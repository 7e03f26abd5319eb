//! `multus-agent run`: load the dataplane (adopting what a previous agent pinned), clean up
//! attachments of vanished interfaces, start the watch caches or the local-files watcher, and
//! serve the CNI socket and the metrics port until SIGTERM.
//!
//! Shutdown stops accepting, lets requests in flight finish, and leaves everything else in
//! place: the pinned programs keep enforcing and counting, and no CNI configuration is touched
//! (a deleted configuration strands the node's pods on the primary network).
use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use multus_cni::{
    Engine,
    config::{DEFAULT_CNI_DIR, DEFAULT_DEVICE_INFO_DIR, DEFAULT_KUBELET_ROOT_DIR},
    delegate::ChrootExec,
    kube::PodResourcesDevices,
};
use multus_kube::ClientSource;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{Semaphore, mpsc, watch},
};
use tracing::{info, warn};

use crate::{
    attachments::Attachments,
    cni::CniHandler,
    config::{AgentConfig, SourceMode},
    dataplane::{
        AttachMode, Dataplane, PinLayout,
        events::{EventLimit, EventLog},
    },
    enforce::{self, Enforcer, Peers, report::KubeEvents},
    hooks::AgentHooks,
    kube_api::BlockingApi,
    metrics::{self, AgentMetrics, BuildInfo},
    publish::AgentPublisher,
    reconcile, scrape,
    server::{self, Serves, Shared},
    source::{self, kube::KubePods},
    sweep,
};

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: AgentConfig) -> anyhow::Result<()> {
    if let Some(root) = &config.chroot_dir {
        check_chroot_dir(root)?;
    }
    // Before touching the dataplane: a second agent must not swap programs under the first.
    server::ensure_no_other_agent(&config.socket_dir)?;
    let metrics = AgentMetrics::default();
    let layout = PinLayout::new(&config.bpffs_dir, &config.dataplane_state_dir);
    let mode = config.attach_mode.unwrap_or_else(AttachMode::detect);
    let (mut dataplane, adoption) = Dataplane::load_sized(layout.clone(), mode, config.map_sizing)
        .context("loading the dataplane")?;
    let events = drop_events(&config, &layout, &mut dataplane, &metrics)?;
    for id in &adoption.adopted {
        metrics.attach_op("adopt", true);
        tracing::debug!(id, "adopted");
    }
    for e in &adoption.errors {
        metrics.attach_op("adopt", false);
        warn!("adopting a pinned attachment: {e}");
    }
    info!(
        mode = %mode,
        adopted = adoption.adopted.len(),
        errors = adoption.errors.len(),
        "dataplane loaded"
    );
    let temp_dirs = (
        cni_dir_key(&config, "cniDir", DEFAULT_CNI_DIR),
        layout.records(),
    );
    sweep::temp_files(&temp_dirs.0, &temp_dirs.1, true);
    let attachments = Arc::new(
        Attachments::new(dataplane, metrics.clone()).context("reading attachment records")?,
    );
    let gone = reconcile::dead_interfaces(&attachments, &metrics);
    if !gone.is_empty() {
        info!(
            removed = gone.len(),
            "removed attachments of interfaces that are gone"
        );
    }
    let found_at_start: BTreeSet<u32> = attachments.records().iter().map(|r| r.id).collect();
    // The blocking API client owns a runtime of its own: build it outside the agent's.
    let kube = match &config.source {
        SourceMode::Kubernetes { kubeconfig } => {
            let Some(node) = config.node_name.clone() else {
                bail!("Kubernetes mode needs this node's name: set nodeName or MULTUS_NODE_NAME");
            };
            let client_source = ClientSource::from_multus_kubeconfig(kubeconfig.as_deref())
                .context("no kubeconfig and not running in a pod")?;
            let api = Arc::new(
                BlockingApi::new(&client_source).context("building the Kubernetes client")?,
            );
            Some((client_source, api, node))
        }
        SourceMode::Standalone { .. } => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.request_concurrency + 8)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(
        Arc::new(config),
        attachments,
        kube,
        metrics,
        found_at_start,
        temp_dirs,
        events,
    ));
    // A request stuck in a delegate must not keep the process alive past its grace period.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Sets the drop events' rate limit and starts draining them into a log of `dropEventBuffer`.
fn drop_events(
    config: &AgentConfig,
    layout: &PinLayout,
    dataplane: &mut Dataplane,
    metrics: &AgentMetrics,
) -> anyhow::Result<Arc<EventLog>> {
    dataplane
        .set_event_limit(EventLimit {
            rate: config.drop_event_rate,
            burst: config.drop_event_burst,
        })
        .context("setting the drop event rate limit")?;
    let log = Arc::new(EventLog::new(config.drop_event_buffer));
    if let Some(reader) = dataplane.take_event_reader() {
        crate::observe::spawn_reader(reader, layout.clone(), Arc::clone(&log), metrics.clone())?;
    }
    Ok(log)
}

/// A missing chrootDir (the hostPath mount forgotten) would fail every ADD: fail at start.
fn check_chroot_dir(root: &std::path::Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(root).with_context(|| {
        format!(
            "chrootDir {}: the node's / must be mounted there",
            root.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("chrootDir {} is not a directory", root.display());
    }
    Ok(())
}

async fn serve(
    config: Arc<AgentConfig>,
    attachments: Arc<Attachments>,
    kube: Option<(ClientSource, Arc<BlockingApi>, String)>,
    metrics: AgentMetrics,
    found_at_start: BTreeSet<u32>,
    temp_dirs: (PathBuf, PathBuf),
    events: Arc<EventLog>,
) -> anyhow::Result<()> {
    let (policy_tx, policy_rx) = mpsc::channel(enforce::CHANGE_QUEUE);
    let (source, enforcer) = match (&config.source, kube) {
        (SourceMode::Kubernetes { .. }, Some((client_source, api, node))) => {
            info!(%node, "Kubernetes mode: watching pods of this node, NADs and namespaces");
            let (source, caches, client) = source::kube::start(
                &client_source,
                Arc::clone(&api),
                &node,
                config.pod_cache_wait,
                &metrics,
                Some(&policy_tx),
            )
            .await
            .context("starting the watch caches")?;
            info!("policy: watching pods of every namespace and MultiNetworkPolicies");
            enforce::kube::start(&client, &policy_tx, &metrics);
            let events =
                KubeEvents::start(Arc::clone(&api)).context("starting the Event poster")?;
            let enforcer = Enforcer::new(
                Arc::clone(&attachments),
                metrics.clone(),
                Peers::NetworkStatus,
                Some(Arc::new(events)),
                Some(Arc::new(KubePods::new(caches, api))),
            );
            (source, enforcer)
        }
        (SourceMode::Standalone { dir }, _) => {
            info!(dir = %dir.display(), "standalone mode: networks and pods from local files");
            let source = source::standalone::start(dir, &metrics)
                .with_context(|| format!("watching {}", dir.display()))?;
            tokio::spawn(enforce::local::run(
                dir.clone(),
                source.changes.clone(),
                policy_tx.clone(),
            ));
            let enforcer = Enforcer::new(
                Arc::clone(&attachments),
                metrics.clone(),
                Peers::LocalAttachments,
                None,
                None,
            );
            (source, enforcer)
        }
        (SourceMode::Kubernetes { .. }, None) => bail!("Kubernetes mode without a client"),
    };
    drop(policy_tx);
    let enforcer = Arc::new(enforcer);
    {
        // Reads every interface: off the async threads. Before any change is applied.
        let (enforcer, records) = (Arc::clone(&enforcer), attachments.records());
        tokio::task::spawn_blocking(move || enforcer.adopt(&records))
            .await
            .context("registering attachments for policy")?;
    }
    tokio::spawn(Arc::clone(&enforcer).run(policy_rx));
    let mut engine = Engine::new(Arc::clone(&source.network))
        .with_hooks(Arc::new(AgentHooks::new(
            Arc::clone(&attachments),
            Some(Arc::clone(&enforcer)),
        )))
        // Thick-mode Events through the same publisher as thin mode, wrapped to count what the
        // agent exports (abandoned DELs).
        .with_publisher(Arc::new(AgentPublisher::new(
            metrics.clone(),
            Arc::clone(&source.publisher),
        )));
    if let Some(root) = &config.chroot_dir {
        // Delegates on the node's filesystem: their configurations name the node's paths.
        info!(chroot_dir = %root.display(), "delegates run with their root at chrootDir");
        engine = engine.with_exec(Arc::new(ChrootExec::new(root)));
    }
    if matches!(config.source, SourceMode::Kubernetes { .. }) {
        // Device IDs of resourceName networks, from kubelet on this node (as thin mode does).
        engine = engine.with_devices(Arc::new(PodResourcesDevices::new(
            &cni_dir_key(&config, "kubeletRootDir", DEFAULT_KUBELET_ROOT_DIR),
            &cni_dir_key(&config, "deviceInfoDir", DEFAULT_DEVICE_INFO_DIR),
            None,
        )));
    }
    let handler = Arc::new(CniHandler::new(
        engine,
        Arc::clone(&config),
        Arc::clone(&attachments),
        metrics.clone(),
    ));
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: multus_cni::build_info::COMMIT.to_owned(),
        attach_mode: attachments.mode().to_string(),
        kernel: metrics::kernel_release(),
    };
    let registry = Arc::new(scrape::registry(&metrics, Arc::clone(&attachments), build));
    let shared = Arc::new(Shared {
        handler,
        requests: Arc::new(Semaphore::new(config.request_concurrency)),
        max_body: config.max_request_bytes,
        synced: all_true(source.synced.clone(), enforcer.synced()),
        stopping: Default::default(),
        registry,
        metrics: metrics.clone(),
        events,
    });
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(export_readiness(Arc::clone(&shared)));
    let (listener, socket) = server::bind_socket(&config.socket_dir)?;
    info!(socket = %socket.display(), "serving CNI requests");
    for (address, port, what) in http_listeners(&config) {
        let (tcp, bound) = crate::listen::bind(address, port)?;
        let tcp = TcpListener::from_std(tcp)
            .with_context(|| format!("registering the listener on {bound}"))?;
        info!(address = %bound, "serving {}", match what {
            Serves::MetricsAndProbes => "/metrics, /healthz, /readyz",
            Serves::Probes => "/healthz, /readyz",
        });
        tokio::spawn(server::serve_http(
            tcp,
            Arc::clone(&shared),
            what,
            stop.clone(),
        ));
    }
    if let Some(placement) = source.placement.clone() {
        let mut synced = source.synced.clone();
        let attachments = Arc::clone(&attachments);
        tokio::spawn(async move {
            if synced.wait_for(|s| *s).await.is_ok() {
                let removed = tokio::task::spawn_blocking(move || {
                    reconcile::pods_gone(&attachments, placement.as_ref(), &found_at_start)
                })
                .await
                .unwrap_or_default();
                info!(
                    removed = removed.len(),
                    "pod cache synced; attachments reconciled"
                );
            }
        });
    }
    tokio::spawn(periodic_reconcile(
        Arc::clone(&attachments),
        Arc::clone(&enforcer),
        metrics.clone(),
        (config.reconcile_interval, temp_dirs),
        stop.clone(),
    ));
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    server::serve_socket(
        listener,
        socket,
        shared,
        config.connection_limit,
        config.shutdown_grace,
        stop,
    )
    .await;
    info!("stopped; pinned attachments keep working");
    Ok(())
}

/// The TCP listeners `config` asks for: the metrics port (which answers the probes too) and
/// the health port, one listener when both have the same number.
fn http_listeners(config: &AgentConfig) -> Vec<(std::net::IpAddr, u16, Serves)> {
    let mut out = Vec::new();
    if config.metrics_port != 0 {
        out.push((
            config.metrics_address,
            config.metrics_port,
            Serves::MetricsAndProbes,
        ));
    }
    if config.health_port != 0 && config.health_port != config.metrics_port {
        out.push((config.health_address, config.health_port, Serves::Probes));
    }
    if out.is_empty() {
        warn!("metricsPort and healthPort are 0: probes can reach only the CNI socket");
    }
    out
}

/// Keeps `multus_agent_ready` equal to what `/readyz` answers (the socket's shutdown sets it
/// to 0).
async fn export_readiness(shared: Arc<Shared>) {
    let mut synced = shared.synced.clone();
    loop {
        drop(synced.borrow_and_update());
        shared.metrics.set_ready(shared.ready());
        if synced.changed().await.is_err() {
            return;
        }
    }
}

/// A flag that is `true` while both `a` and `b` are (a flag whose sender is gone keeps its
/// last value).
fn all_true(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() && *b.borrow());
    tokio::spawn(async move {
        let (mut a_open, mut b_open) = (true, true);
        while a_open || b_open {
            tokio::select! {
                r = a.changed(), if a_open => a_open = r.is_ok(),
                r = b.changed(), if b_open => b_open = r.is_ok(),
            }
            let both = *a.borrow() && *b.borrow();
            tx.send_if_modified(|v| std::mem::replace(v, both) != both);
        }
    });
    rx
}

async fn periodic_reconcile(
    attachments: Arc<Attachments>,
    enforcer: Arc<Enforcer>,
    metrics: AgentMetrics,
    (every, temp_dirs): (Duration, (PathBuf, PathBuf)),
    mut stop: watch::Receiver<bool>,
) {
    let temp_dirs = Arc::new(temp_dirs);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = server::stopped(&mut stop) => return,
        }
        let (attachments, metrics) = (Arc::clone(&attachments), metrics.clone());
        let dirs = Arc::clone(&temp_dirs);
        let removed = tokio::task::spawn_blocking(move || {
            sweep::temp_files(&dirs.0, &dirs.1, false);
            reconcile::dead_interfaces(&attachments, &metrics)
        })
        .await
        .unwrap_or_default();
        if !removed.is_empty() {
            info!(?removed, "removed attachments of interfaces that are gone");
            let enforcer = Arc::clone(&enforcer);
            let _ = tokio::task::spawn_blocking(move || enforcer.prune()).await;
        }
    }
}

async fn wait_for_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; stop the agent with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}

/// A directory named by a CNI configuration key (`kubeletRootDir`, `deviceInfoDir`), as the
/// agent's configuration overrides it, else its default.
fn cni_dir_key(config: &AgentConfig, key: &str, default: &str) -> PathBuf {
    config
        .cni_overrides
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or(default)
        .into()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn probes_are_served_whatever_the_metrics_port() {
        let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let config = |metrics_port, health_port| AgentConfig {
            metrics_address: local,
            metrics_port,
            health_port,
            ..AgentConfig::default()
        };
        assert_eq!(
            http_listeners(&config(9110, 9111)),
            [
                (local, 9110, Serves::MetricsAndProbes),
                (any, 9111, Serves::Probes)
            ]
        );
        assert_eq!(
            http_listeners(&config(0, 9111)),
            [(any, 9111, Serves::Probes)]
        );
        assert_eq!(
            http_listeners(&config(9110, 9110)),
            [(local, 9110, Serves::MetricsAndProbes)]
        );
        assert_eq!(
            http_listeners(&config(9110, 0)),
            [(local, 9110, Serves::MetricsAndProbes)]
        );
        assert!(http_listeners(&config(0, 0)).is_empty());
    }
}
