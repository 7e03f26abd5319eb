//! A fault-injecting HTTP proxy between a client under test and the test API server: plain
//! HTTP towards the client (so a kubeconfig can point at it), TLS towards the server, every
//! header forwarded (so RBAC still applies per token). It records each request, and on demand
//! answers 409 to status updates, 404 to pod reads, or stops answering altogether.
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::HOST};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot};

use super::tls;

/// How the proxy stops answering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stall {
    /// It answers (the default).
    #[default]
    None,
    /// It accepts requests and never answers them.
    Hang,
    /// It closes every connection without an answer.
    Refuse,
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The status answered (0 when no answer was given).
    pub status: u16,
    /// Whether the proxy made the answer up instead of forwarding.
    pub injected: bool,
    /// The bearer token sent, if any.
    pub token: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    conflicts: u32,
    pod_not_found: u32,
    stall: Stall,
    log: Vec<Recorded>,
}

type Body = BoxBody<Bytes, hyper::Error>;

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to the API server at `upstream`.
    #[track_caller]
    pub fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, None)
    }

    /// Like [`FaultProxy::start`], listening on 127.0.0.1 inside the network namespace at
    /// `netns` (its loopback up): a client running there reaches the API server through it,
    /// while the proxy's own connections to `upstream` stay in the test's namespace.
    #[track_caller]
    pub fn start_in_netns(upstream: SocketAddr, netns: &Path) -> Self {
        let listener = bind_in_netns(netns)
            .unwrap_or_else(|e| panic!("binding the proxy in {}: {e}", netns.display()));
        Self::start_with(upstream, Some(listener))
    }

    #[track_caller]
    fn start_with(upstream: SocketAddr, listener: Option<std::net::TcpListener>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("fault-proxy".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(serve(upstream, listener, shared, ready_tx, stopped));
            })
            .unwrap_or_else(|e| panic!("spawning the proxy thread: {e}"));
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("starting the fault proxy: {e}"),
            Err(_) => panic!("the fault proxy thread died"),
        };
        Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for a kubeconfig's `server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers 409 Conflict to the next `n` pod status updates (PUT/PATCH `.../pods/X/status`).
    pub fn conflict_status_updates(&self, n: u32) {
        self.state().conflicts = n;
    }

    /// Answers 404 Not Found to the next `n` GETs of a single pod.
    pub fn not_found_pod_gets(&self, n: u32) {
        self.state().pod_not_found = n;
    }

    /// From now on, stop answering in the given way ([`Stall::None`] answers again).
    pub fn stall(&self, stall: Stall) {
        self.state().stall = stall;
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().log.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().log.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listening socket on a free 127.0.0.1 port of the namespace at `netns`: bound from a
/// short-lived thread that enters it (a socket stays in the namespace it was made in).
pub(super) fn bind_in_netns(netns: &Path) -> std::io::Result<std::net::TcpListener> {
    crate::inside::run_in(netns, || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?
}

async fn serve(
    upstream: SocketAddr,
    listener: Option<std::net::TcpListener>,
    state: Arc<Mutex<State>>,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let bound = match listener {
        Some(l) => TcpListener::from_std(l),
        None => TcpListener::bind("127.0.0.1:0").await,
    };
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            let _ = ready.send(Ok(addr));
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    }
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        // Answers are written in pieces; without TCP_NODELAY each piece after the first waits
        // for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let refuse = state.lock().unwrap_or_else(PoisonError::into_inner).stall == Stall::Refuse;
        if refuse {
            drop(stream);
            continue;
        }
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, upstream, Arc::clone(&state)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status_body(
    code: u16,
    reason: &str,
    message: &str,
    kind: &str,
    name: &str,
) -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code,
           "details": {"name": name, "kind": kind}})
}

/// `Some(pod name)` for `/api/v1/namespaces/NS/pods/NAME` with `tail` after it.
fn pod_path<'a>(path: &'a str, tail: Option<&str>) -> Option<&'a str> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (parts.as_slice(), tail) {
        (["api", "v1", "namespaces", _, "pods", name], None) => Some(name),
        (["api", "v1", "namespaces", _, "pods", name, t], Some(want)) if *t == want => Some(name),
        _ => None,
    }
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let record = |status: u16, injected: bool| Recorded {
        method: method.clone(),
        path: path.clone(),
        status,
        injected,
        token: token.clone(),
    };
    let stall = {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.stall != Stall::None {
            st.log.push(record(0, true));
        }
        st.stall
    };
    match stall {
        // Never answers; the connection stays open until the client gives up.
        Stall::Hang => std::future::pending::<()>().await,
        Stall::Refuse => return Err(std::io::Error::other("refusing")),
        Stall::None => {}
    }
    let injected = {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        let status_update = matches!(method.as_str(), "PUT" | "PATCH");
        if let (true, Some(name), true) = (
            status_update,
            pod_path(&path, Some("status")),
            st.conflicts > 0,
        ) {
            st.conflicts -= 1;
            Some((
                StatusCode::CONFLICT,
                status_body(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                    "pods",
                    name,
                ),
            ))
        } else if let (true, Some(name), true) =
            (method == "GET", pod_path(&path, None), st.pod_not_found > 0)
        {
            st.pod_not_found -= 1;
            Some((
                StatusCode::NOT_FOUND,
                status_body(
                    404,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                    "pods",
                    name,
                ),
            ))
        } else {
            None
        }
    };
    if let Some((status, body)) = injected {
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log
            .push(record(status.as_u16(), true));
        return Ok(full(status, &body));
    }
    let resp = match forward(req, upstream).await {
        Ok(resp) => resp,
        Err(e) => full(
            StatusCode::BAD_GATEWAY,
            &status_body(502, "BadGateway", &format!("fault proxy: {e}"), "", ""),
        ),
    };
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .log
        .push(record(resp.status().as_u16(), false));
    Ok(resp)
}

async fn forward(req: Request<Incoming>, upstream: SocketAddr) -> Result<Response<Body>, String> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let mut out = Request::from_parts(parts, Full::new(body));
    out.headers_mut().insert(
        HOST,
        http::HeaderValue::from_str(&upstream.to_string()).map_err(|e| e.to_string())?,
    );
    // Only the path and query travel; the scheme and authority are the upstream's.
    if let Some(pq) = out.uri().path_and_query().cloned() {
        *out.uri_mut() = pq
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    }
    let stream = tls::connect(upstream)
        .await
        .map_err(|e| format!("connecting to {upstream}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(out).await.map_err(|e| e.to_string())?;
    Ok(resp.map(BodyExt::boxed))
}
