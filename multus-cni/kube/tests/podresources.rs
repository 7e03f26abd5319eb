//! Device IDs from a real gRPC PodResources server on a unix socket (a small tonic server that
//! speaks kubelet's v1 `List`), and from the checkpoint file when there is no socket.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
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
    time::Duration,
};

use multus_kube::podresources::{
    DeviceSource, LIST_METHOD, PodRef, PodResourcesConfig, pod_devices,
    proto::{
        ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse,
        PodResources,
    },
};
use tokio::sync::oneshot;
use tonic::{body::Body, server::Grpc};
use tonic_prost::ProstCodec;

/// kubelet's side: answers `List` with a fixed allocation and counts the calls.
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

/// A server on `socket` until the returned sender is dropped or fired.
fn serve(
    socket: &Path,
    answer: ListPodResourcesResponse,
) -> (
    oneshot::Sender<()>,
    Arc<AtomicU32>,
    std::thread::JoinHandle<()>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let lister = Lister {
        answer: Arc::new(answer),
        calls: Arc::clone(&calls),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let socket = socket.to_owned();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            ready_tx.send(()).unwrap();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(lister, incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    ready_rx.recv().unwrap();
    (stop, calls, thread)
}

fn devices(resource: &str, ids: &[&str]) -> ContainerDevices {
    ContainerDevices {
        resource_name: resource.to_owned(),
        device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        topology: None,
    }
}

fn allocation() -> ListPodResourcesResponse {
    ListPodResourcesResponse {
        pod_resources: vec![
            PodResources {
                name: "sriov-pod".into(),
                namespace: "tenant-a".into(),
                containers: vec![
                    ContainerResources {
                        name: "app".into(),
                        devices: vec![devices(
                            "example.com/sriov_nic",
                            &["0000:03:00.4", "0000:03:00.2"],
                        )],
                        cpu_ids: vec![2, 3],
                    },
                    ContainerResources {
                        name: "sidecar".into(),
                        devices: vec![
                            devices("example.com/sriov_nic", &["0000:03:00.3"]),
                            devices("example.com/gpu", &["gpu-0"]),
                        ],
                        cpu_ids: vec![],
                    },
                ],
            },
            // Same name in another namespace: must not be mixed in.
            PodResources {
                name: "sriov-pod".into(),
                namespace: "tenant-b".into(),
                containers: vec![ContainerResources {
                    name: "app".into(),
                    devices: vec![devices("example.com/sriov_nic", &["0000:04:00.1"])],
                    cpu_ids: vec![],
                }],
            },
        ],
    }
}

fn config(dir: &Path) -> PodResourcesConfig {
    PodResourcesConfig {
        socket: dir.join("kubelet.sock"),
        checkpoint: dir.join("kubelet_internal_checkpoint"),
        timeout: Duration::from_secs(2),
    }
}

const POD: PodRef<'static> = PodRef {
    namespace: "tenant-a",
    name: "sriov-pod",
    uid: "4b6d7c1e-0000-4000-8000-000000000001",
};

#[test]
fn device_ids_from_the_pod_resources_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (stop, calls, thread) = serve(&config.socket, allocation());
    let got = pod_devices(&config, POD).unwrap();
    assert_eq!(got.source, DeviceSource::PodResources);
    assert_eq!(
        got.device_ids("example.com/sriov_nic"),
        ["0000:03:00.2", "0000:03:00.3", "0000:03:00.4"]
    );
    assert_eq!(got.device_ids("example.com/gpu"), ["gpu-0"]);
    assert!(got.device_ids("example.com/other").is_empty());
    let other = pod_devices(
        &config,
        PodRef {
            name: "nobody",
            ..POD
        },
    )
    .unwrap();
    assert!(other.devices.is_empty());
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    // A checkpoint is ignored while the socket exists.
    std::fs::write(&config.checkpoint, "{}").unwrap();
    assert_eq!(
        pod_devices(&config, POD).unwrap().source,
        DeviceSource::PodResources
    );
    drop(stop);
    thread.join().unwrap();
}

#[test]
fn a_dead_socket_is_an_error_not_a_silent_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // A socket file nobody listens on, as kubelet leaves behind when it is down.
    drop(std::os::unix::net::UnixListener::bind(&config.socket).unwrap());
    std::fs::write(
        &config.checkpoint,
        r#"{"Data":{"PodDeviceEntries":[]},"Checksum":0}"#,
    )
    .unwrap();
    let err = pod_devices(&config, POD).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("PodResources List") && text.contains("kubelet.sock"),
        "{text}"
    );
}

#[test]
fn checkpoint_fallback_when_the_socket_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::write(
        &config.checkpoint,
        format!(
            r#"{{"Data":{{"PodDeviceEntries":[
                {{"PodUID":"{uid}","ContainerName":"app","ResourceName":"example.com/sriov_nic",
                  "DeviceIDs":{{"0":["0000:03:00.5"],"1":["0000:81:00.1"]}},"AllocResp":"CgA="}},
                {{"PodUID":"someone-else","ContainerName":"app","ResourceName":"example.com/sriov_nic",
                  "DeviceIDs":{{"0":["0000:03:00.6"]}},"AllocResp":"CgA="}}],
              "RegisteredDevices":{{"example.com/sriov_nic":["0000:03:00.5","0000:03:00.6","0000:81:00.1"]}}}},
              "Checksum":12345}}"#,
            uid = POD.uid
        ),
    )
    .unwrap();
    let got = pod_devices(&config, POD).unwrap();
    assert_eq!(got.source, DeviceSource::Checkpoint);
    assert_eq!(
        got.device_ids("example.com/sriov_nic"),
        ["0000:03:00.5", "0000:81:00.1"]
    );
}
