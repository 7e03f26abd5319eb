//! Building a `kube::Client` from a kubeconfig file or the in-cluster service account, with
//! connect/read timeouts and a bearer token that follows its file.
//!
//! kube-rs re-reads a `tokenFile` (and the in-cluster token) at most once a minute, so after a
//! projected token is rotated and the old one revoked, a long-lived client fails with 401 for up
//! to a minute. Here the token file is checked on every request instead (one `stat`; it is only
//! read again when its inode, size or modification time changed), so a rotation takes effect on
//! the very next request.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, header::AUTHORIZATION};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioExecutor};
use kube::{
    Client, Config,
    client::{ClientBuilder, ConfigExt as _},
    config::{KubeConfigOptions, Kubeconfig},
};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::error::Error;

/// Where the in-cluster service account's files are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Network timeouts of the client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for establishing the TCP+TLS connection.
    pub connect_timeout: Duration,
    /// Limit for waiting on the server while reading a response.
    pub read_timeout: Duration,
    /// Limit for writing a request.
    pub write_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the client's cluster address and credentials come from.
#[derive(Clone, Debug)]
pub enum ClientSource {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, the
    /// token, CA and namespace files in `dir` (normally [`SERVICE_ACCOUNT_DIR`]).
    InCluster {
        /// The directory holding `token`, `ca.crt` and `namespace`.
        dir: PathBuf,
    },
    /// Like [`ClientSource::InCluster`] with the API server given instead of read from the
    /// environment (`https://host:port`).
    ServiceAccount {
        /// The API server URL.
        server: String,
        /// The directory holding `token`, `ca.crt` and `namespace`.
        dir: PathBuf,
    },
}

impl ClientSource {
    /// Multus's rule for its `kubeconfig` key: a non-empty path is a kubeconfig file; otherwise
    /// the in-cluster service account when `KUBERNETES_SERVICE_HOST` and `_PORT` are set;
    /// otherwise `None`, and the caller works without the API (no NADs, no status).
    pub fn from_multus_kubeconfig(kubeconfig: Option<&Path>) -> Option<Self> {
        match kubeconfig {
            Some(path) if !path.as_os_str().is_empty() => Some(Self::Kubeconfig(path.to_owned())),
            _ => (std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some())
            .then(|| Self::InCluster {
                dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
            }),
        }
    }
}

/// Builds a client. Must run inside a tokio runtime (the connection pool spawns onto it).
pub async fn build_client(source: &ClientSource, opts: &ClientOptions) -> Result<Client, Error> {
    let mut config = match source {
        ClientSource::Kubeconfig(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        ClientSource::InCluster { dir } => service_account_config(&in_cluster_server(dir)?, dir)?,
        ClientSource::ServiceAccount { server, dir } => service_account_config(server, dir)?,
    };
    config.connect_timeout = Some(opts.connect_timeout);
    config.read_timeout = Some(opts.read_timeout);
    config.write_timeout = Some(opts.write_timeout);
    // Retries are the API facade's job, with bounds it controls.
    config.default_retry = false;
    // An inline token wins over a token file (kubeconfig rules); only a file needs following.
    let token_file = match config.auth_info.token {
        Some(_) => None,
        None => config.auth_info.token_file.take().map(PathBuf::from),
    };
    let auth = token_file.map(TokenFileAuth::new).transpose()?;
    if config.proxy_url.is_some() {
        // kube-rs's own connector knows HTTP and SOCKS proxies.
        let builder = ClientBuilder::try_from(config).map_err(|source| Error::Client { source })?;
        return Ok(match auth {
            Some(auth) => builder.with_layer(&auth).build(),
            None => builder.build(),
        });
    }
    nodelay_client(&config, auth)
}

/// kube-rs's client stack (TLS from the config, timeouts, base URI, the config's own auth and
/// headers) on a connector with TCP_NODELAY, plus the token-file layer. kube-rs leaves Nagle on:
/// the first request then sits behind the TLS handshake's last flight until the server's
/// delayed ACK, about 40 ms, which a one-shot CNI binary would pay on every ADD.
fn nodelay_client(config: &Config, auth: Option<TokenFileAuth>) -> Result<Client, Error> {
    let client_error = |source| Error::Client { source };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(client_error)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let transport = hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(client_error)?)
        .layer(config.extra_headers_layer().map_err(client_error)?)
        .map_err(BoxError::from)
        .service(transport);
    let builder = ClientBuilder::new(service, config.default_namespace.clone());
    Ok(match auth {
        Some(auth) => builder.with_layer(&auth).build(),
        None => builder.build(),
    })
}

fn in_cluster_server(dir: &Path) -> Result<String, Error> {
    let env = |name: &str| {
        std::env::var(name).map_err(|_| Error::InCluster {
            dir: dir.to_owned(),
            message: format!("{name} is not set (not running in a pod?)"),
        })
    };
    let host = env("KUBERNETES_SERVICE_HOST")?;
    let port = env("KUBERNETES_SERVICE_PORT")?;
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host,
    };
    Ok(format!("https://{host}:{port}"))
}

fn service_account_config(url: &str, dir: &Path) -> Result<Config, Error> {
    let uri = url.parse::<http::Uri>().map_err(|e| Error::InCluster {
        dir: dir.to_owned(),
        message: format!("bad API server address {url}: {e}"),
    })?;
    let ca_path = dir.join("ca.crt");
    let certs = CertificateDer::pem_file_iter(&ca_path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| Error::InCluster {
            dir: dir.to_owned(),
            message: format!("reading CA bundle {}: {e}", ca_path.display()),
        })?;
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .map(|n| n.trim().to_owned())
        .unwrap_or_else(|_| "default".to_owned());
    let mut config = Config::new(uri);
    config.default_namespace = namespace;
    config.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
    // kube-rs re-reads this file periodically, so a rotated cluster CA is followed too.
    config.root_cert_file = Some(ca_path);
    config.auth_info.token_file = Some(dir.join("token").to_string_lossy().into_owned());
    Ok(config)
}

/// The (inode, size, mtime in ns) a token was read at.
type Stamp = (u64, u64, i128);

#[derive(Debug)]
struct CachedToken {
    stamp: Stamp,
    header: HeaderValue,
}

/// Sets `Authorization: Bearer <token>` from a file, re-reading it when it changed.
#[derive(Clone, Debug)]
pub struct TokenFileAuth {
    path: PathBuf,
    cached: Arc<Mutex<CachedToken>>,
}

impl TokenFileAuth {
    /// Reads the token once; a missing or unreadable file is an error now rather than a 401
    /// later.
    pub fn new(path: PathBuf) -> Result<Self, Error> {
        let cached = read_token(&path).map_err(|source| Error::TokenFile {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            cached: Arc::new(Mutex::new(cached)),
        })
    }

    /// The header for the current token. When the file changed it is read again; when it
    /// cannot be read the last token stays in use (a runtime may remove the file after start).
    pub fn header(&self) -> HeaderValue {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        match stamp(&self.path) {
            Ok(now) if now != cached.stamp => match read_token(&self.path) {
                Ok(fresh) => {
                    tracing::debug!(path = %self.path.display(), "service-account token changed; using the new one");
                    *cached = fresh;
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "token file changed but cannot be read; keeping the previous token");
                }
            },
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "token file not readable; keeping the previous token");
            }
        }
        cached.header.clone()
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    Ok((meta.ino(), meta.size(), mtime))
}

fn read_token(path: &Path) -> std::io::Result<CachedToken> {
    // Stat before reading: a change racing with the read is then seen on the next request.
    let stamp = stamp(path)?;
    let token = std::fs::read_to_string(path)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token file is empty",
        ));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token has characters not allowed in a header",
        )
    })?;
    header.set_sensitive(true);
    Ok(CachedToken { stamp, header })
}

impl<S> Layer<S> for TokenFileAuth {
    type Service = TokenFileAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenFileAuthService {
            auth: self.clone(),
            inner,
        }
    }
}

/// The service [`TokenFileAuth`] wraps around the client stack.
#[derive(Clone, Debug)]
pub struct TokenFileAuthService<S> {
    auth: TokenFileAuth,
    inner: S,
}

impl<S, B> Service<Request<B>> for TokenFileAuthService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.headers_mut().insert(AUTHORIZATION, self.auth.header());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn token_follows_file_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let auth = TokenFileAuth::new(path.clone()).unwrap();
        assert_eq!(auth.header(), "Bearer first");
        // Kubelet swaps projected volumes by renaming: a new inode.
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "second").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(auth.header(), "Bearer second");
        // Gone: keep the last token.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(auth.header(), "Bearer second");
    }

    #[test]
    fn multus_kubeconfig_rule() {
        let path = Path::new("/etc/cni/net.d/multus.d/multus.kubeconfig");
        assert!(matches!(
            ClientSource::from_multus_kubeconfig(Some(path)),
            Some(ClientSource::Kubeconfig(p)) if p == path
        ));
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert!(ClientSource::from_multus_kubeconfig(Some(Path::new(""))).is_none());
            assert!(ClientSource::from_multus_kubeconfig(None).is_none());
        }
    }

    #[test]
    fn in_cluster_outside_a_pod_is_a_clear_error() {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return; // really in a pod
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let source = ClientSource::InCluster {
            dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
        };
        let Err(err) = runtime.block_on(build_client(&source, &ClientOptions::default())) else {
            panic!("built an in-cluster client outside a pod");
        };
        assert!(
            err.to_string()
                .contains("KUBERNETES_SERVICE_HOST is not set"),
            "{err}"
        );
    }

    #[test]
    fn empty_or_missing_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let err = TokenFileAuth::new(path.clone()).unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
        std::fs::write(&path, "  \n").unwrap();
        let err = TokenFileAuth::new(path).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
