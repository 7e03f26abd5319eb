//! The agent's HTTP endpoints: the CNI socket (`POST /cni`, `/healthz`, `/readyz`; root
//! only), the metrics port (`/metrics`, `/healthz`, `/readyz`) and the health port (`/healthz`,
//! `/readyz` alone, so probes work with metrics off).
//!
//! Bounds: at most `connectionLimit` connections are accepted at once (the rest wait in the
//! listen queue), at most `requestConcurrency` requests run the engine at once (the rest wait
//! with only their headers read), and a body larger than `maxRequestBytes` is refused.
use std::{
    convert::Infallible,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use multus_cni::{
    cni::{CniVersion, code},
    front::Reply,
    thick::{self, CNI_ENDPOINT, ENV_VARS, EXIT_CODE_HEADER},
};
use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::{Semaphore, watch},
};
use tracing::{debug, info, warn};

use crate::{
    cni::CniHandler,
    dataplane::events::EventLog,
    metrics::AgentMetrics,
    observe::{self, EVENTS_ENDPOINT},
};

/// What the request handlers share.
pub struct Shared {
    /// The CNI request handler.
    pub handler: Arc<CniHandler>,
    /// Permits to run the engine.
    pub requests: Arc<Semaphore>,
    /// The largest body accepted.
    pub max_body: usize,
    /// `true` once the caches synced.
    pub synced: watch::Receiver<bool>,
    /// Set when shutting down: not ready any more.
    pub stopping: AtomicBool,
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// The agent's metrics.
    pub metrics: AgentMetrics,
    /// The last drop events (`GET /events` on the socket).
    pub events: Arc<EventLog>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// What `/readyz` answers: the caches synced and not shutting down.
    pub fn ready(&self) -> bool {
        *self.synced.borrow() && !self.stopping.load(Ordering::Acquire)
    }
}

type HttpResponse = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

fn cni_response(status: StatusCode, reply: Reply) -> HttpResponse {
    let mut resp = text(status, reply.stdout);
    resp.headers_mut()
        .insert(EXIT_CODE_HEADER, http::HeaderValue::from(reply.exit_code));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn probes(shared: &Shared, path: &str) -> Option<HttpResponse> {
    match path {
        "/healthz" => Some(text(StatusCode::OK, "ok\n")),
        "/readyz" if shared.ready() => Some(text(StatusCode::OK, "ok\n")),
        "/readyz" => Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: caches not synced or shutting down\n",
        )),
        _ => None,
    }
}

async fn socket_request(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_owned();
    if let Some(resp) = probes(&shared, &path) {
        return resp;
    }
    if path == EVENTS_ENDPOINT {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        return match observe::Filter::from_query(req.uri().query().unwrap_or_default()) {
            Ok(filter) => {
                let mut resp = text(StatusCode::OK, observe::json_lines(&shared.events, &filter));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-ndjson"),
                );
                resp
            }
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
    }
    if path != CNI_ENDPOINT {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    cni_request(shared, req).await
}

async fn cni_request(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let mut env: Vec<(&'static str, String)> = Vec::new();
    for var in ENV_VARS {
        if let Some(value) = req.headers().get(var) {
            match value.to_str() {
                Ok(v) => env.push((var, v.to_owned())),
                Err(_) => {
                    let reply = Reply::error(
                        CniVersion::LATEST.as_str(),
                        code::INVALID_ENV,
                        format!("{var} is not visible ASCII"),
                    );
                    return cni_response(StatusCode::BAD_REQUEST, reply);
                }
            }
        }
    }
    let too_large = |size: String| {
        shared.metrics.error("request_size");
        cni_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reply::error(
                CniVersion::LATEST.as_str(),
                code::INVALID_CONFIG,
                format!(
                    "the configuration ({size}) is larger than the agent's maxRequestBytes ({})",
                    shared.max_body
                ),
            ),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > shared.max_body) {
        return too_large(format!("{n} bytes"));
    }
    // Wait for a turn before reading the body: waiting requests hold only their headers.
    let Ok(_permit) = Arc::clone(&shared.requests).acquire_owned().await else {
        return cni_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Reply::error(
                CniVersion::LATEST.as_str(),
                code::TRY_AGAIN_LATER,
                "the agent is shutting down",
            ),
        );
    };
    let _in_flight = shared.metrics.in_flight();
    let body = match Limited::new(req.into_body(), shared.max_body)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return too_large("more bytes".to_owned());
        }
        Err(e) => {
            return cni_response(
                StatusCode::BAD_REQUEST,
                Reply::error(
                    CniVersion::LATEST.as_str(),
                    code::IO_FAILURE,
                    format!("reading the request: {e}"),
                ),
            );
        }
    };
    let handler = Arc::clone(&shared.handler);
    let joined = tokio::task::spawn_blocking(move || {
        let lookup = |key: &str| {
            env.iter()
                .find(|(name, _)| *name == key)
                .map(|(_, v)| v.clone())
        };
        handler.handle(&lookup, body)
    })
    .await;
    match joined {
        Ok(reply) => cni_response(StatusCode::OK, reply),
        Err(e) => {
            shared.metrics.error("request_panic");
            warn!("CNI request handler failed: {e}");
            cni_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reply::error(
                    CniVersion::LATEST.as_str(),
                    code::PLUGIN_FAILED,
                    format!("internal error: {e}"),
                ),
            )
        }
    }
}

async fn metrics_request(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_owned();
    if let Some(resp) = probes(&shared, &path) {
        return resp;
    }
    if path != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    // Reading 1,000 attachments' counters takes milliseconds of syscalls: off the async threads.
    let registry = Arc::clone(&shared.registry);
    match tokio::task::spawn_blocking(move || crate::scrape::encode(&registry)).await {
        Ok(Ok(body)) => {
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static(crate::scrape::CONTENT_TYPE),
            );
            resp
        }
        _ => {
            shared.metrics.error("metrics");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
        }
    }
}

async fn health_request(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    probes(&shared, req.uri().path()).unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
}

async fn serve_connection<S, F, Fut>(stream: S, shared: Arc<Shared>, route: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Arc<Shared>, Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let service = service_fn(move |req| {
        let fut = route(Arc::clone(&shared), req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    if let Err(e) = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!("connection ended: {e}");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let seen = stop.wait_for(|s| *s).await;
    drop(seen);
}

/// Fails when another agent answers on the socket in `dir`.
pub fn ensure_no_other_agent(dir: &Path) -> anyhow::Result<()> {
    let path = thick::socket_path(dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!("another agent is serving {}", path.display());
    }
    Ok(())
}

/// Creates the socket directory (0700), replaces a stale socket, binds and makes it 0600.
/// Fails when another agent answers on the socket.
pub fn bind_socket(dir: &Path) -> anyhow::Result<(UnixListener, PathBuf)> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} 0700", dir.display()))?;
    ensure_no_other_agent(dir)?;
    let path = thick::socket_path(dir);
    if path.exists() {
        fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} 0600", path.display()))?;
    Ok((listener, path))
}

/// Serves the CNI socket until `stop` turns true, then stops accepting, removes the socket
/// (so new shims see the agent as down: ADD retries later, DEL runs in the shim) and lets the
/// requests in flight finish for up to `grace`.
pub async fn serve_socket(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    connection_limit: usize,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(connection_limit));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&connections).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("accepting on {}: {e}", path.display());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // The socket is 0600 in a 0700 directory; this is the second lock on the door.
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == 0 => {}
            Ok(cred) => {
                shared.metrics.error("peer_not_root");
                warn!(
                    uid = cred.uid(),
                    "refusing a connection from a non-root peer"
                );
                continue;
            }
            Err(e) => {
                warn!("reading the peer's credentials: {e}");
                continue;
            }
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, shared, socket_request).await;
        });
    }
    shared.stopping.store(true, Ordering::Release);
    shared.metrics.set_ready(false);
    drop(listener);
    if let Err(e) = fs::remove_file(&path) {
        warn!("removing {}: {e}", path.display());
    }
    info!("stopped accepting CNI requests; waiting for those in flight");
    let all = u32::try_from(connection_limit).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, connections.acquire_many(all))
        .await
        .is_ok()
    {
        info!("every CNI request finished");
    } else {
        warn!("CNI requests still running after {grace:?}; leaving them (the runtime retries)");
    }
}

/// What a TCP listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// `/metrics`, `/healthz` and `/readyz`.
    MetricsAndProbes,
    /// `/healthz` and `/readyz`.
    Probes,
}

/// Serves `what` on `listener` until `stop` turns true.
pub async fn serve_http(
    listener: TcpListener,
    shared: Arc<Shared>,
    what: Serves,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("accepting on the {what:?} port: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let shared = Arc::clone(&shared);
        match what {
            Serves::MetricsAndProbes => {
                tokio::spawn(serve_connection(stream, shared, metrics_request));
            }
            Serves::Probes => {
                tokio::spawn(serve_connection(stream, shared, health_request));
            }
        }
    }
}
