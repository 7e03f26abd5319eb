//! A stand-in for kubelet's PodResources server (feature `testing`): a real gRPC server on a
//! unix socket that answers `List` with a fixed allocation and counts the calls.
use std::{
    convert::Infallible,
    future::Future,
    path::Path,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    thread::JoinHandle,
};

use tokio::sync::oneshot;
use tonic::{body::Body, server::Grpc};
use tonic_prost::ProstCodec;

use super::{
    LIST_METHOD,
    proto::{ContainerDevices, ListPodResourcesRequest, ListPodResourcesResponse},
};

/// kubelet's side of `List`.
#[derive(Clone)]
struct Lister {
    answer: Arc<ListPodResourcesResponse>,
    calls: Arc<AtomicU32>,
}

impl tower::Service<http::Request<Body>> for Lister {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let answer = Arc::clone(&self.answer);
        let calls = Arc::clone(&self.calls);
        Box::pin(async move {
            if req.uri().path() != LIST_METHOD {
                return Ok(tonic::Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            calls.fetch_add(1, Ordering::Relaxed);
            let unary = tower::service_fn(move |_req: tonic::Request<ListPodResourcesRequest>| {
                let answer = Arc::clone(&answer);
                async move { Ok::<_, tonic::Status>(tonic::Response::new((*answer).clone())) }
            });
            let mut grpc = Grpc::new(ProstCodec::<
                ListPodResourcesResponse,
                ListPodResourcesRequest,
            >::default());
            Ok(grpc.unary(unary, req).await)
        })
    }
}

/// A running fake kubelet; stopped (and its thread joined) when dropped. The socket file stays
/// where it was bound: it lives in the caller's directory.
pub struct FakeKubelet {
    calls: Arc<AtomicU32>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl FakeKubelet {
    /// Serves `answer` on a new unix socket at `socket`; returns once it accepts connections.
    pub fn start(socket: &Path, answer: ListPodResourcesResponse) -> std::io::Result<Self> {
        let calls = Arc::new(AtomicU32::new(0));
        let lister = Lister {
            answer: Arc::new(answer),
            calls: Arc::clone(&calls),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let socket = socket.to_owned();
        // Built here so that a failure is the caller's error; a current-thread runtime moves.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("fake-kubelet".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::UnixListener::bind(&socket) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                    let served = tonic::transport::Server::builder()
                        .serve_with_incoming_shutdown(lister, incoming, async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::warn!("fake kubelet: {e}");
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the fake kubelet thread died"))??;
        Ok(Self {
            calls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// How many `List` calls were answered.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `ContainerDevices` of `resource` with `ids`.
pub fn devices(resource: &str, ids: &[&str]) -> ContainerDevices {
    ContainerDevices {
        resource_name: resource.to_owned(),
        device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        topology: None,
    }
}

/// Writes kubelet's device-plugin checkpoint, `device-plugins/kubelet_internal_checkpoint` below
/// `kubelet_root_dir`, as kubelet does: one entry of container `app` per
/// `(pod UID, resource, device IDs)`, and every device registered under its resource.
pub fn write_checkpoint(
    kubelet_root_dir: &Path,
    entries: &[(&str, &str, &[&str])],
) -> std::io::Result<()> {
    let mut registered: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let pod_entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(uid, resource, ids)| {
            registered.entry(resource).or_default().extend(ids.iter());
            serde_json::json!({"PodUID": uid, "ContainerName": "app", "ResourceName": resource,
                               "DeviceIDs": {"0": ids}, "AllocResp": "CgA="})
        })
        .collect();
    for ids in registered.values_mut() {
        ids.sort_unstable();
    }
    let dir = kubelet_root_dir.join("device-plugins");
    std::fs::create_dir_all(&dir)?;
    let checkpoint = serde_json::json!({
        "Data": {"PodDeviceEntries": pod_entries, "RegisteredDevices": registered},
        "Checksum": 1,
    });
    std::fs::write(
        dir.join("kubelet_internal_checkpoint"),
        checkpoint.to_string(),
    )
}
