//! A tiny blocking REST client for test set-up (namespaces, RBAC objects, CRDs, tokens), so the
//! fixture needs neither kubectl nor the code under test.
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::tls;

/// Requests as one user (a bearer token) against the API server.
#[derive(Clone, Debug)]
pub struct Rest {
    addr: SocketAddr,
    token: String,
}

impl Rest {
    /// A client for the server at `addr` using `token`.
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        Self {
            addr,
            token: token.to_owned(),
        }
    }

    /// Sends one request; returns the status code and the body (JSON, or a JSON string when the
    /// body is not JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let what = format!("{method} {path}");
        runtime
            .block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    self.send(method, path, body),
                )
                .await
                .map_err(|_| "no answer within 30 s".to_owned())?
            })
            .map_err(|e| format!("{what}: {e}"))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let stream = tls::connect(self.addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let payload = body.map(Value::to_string).unwrap_or_default();
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// Like [`Rest::request`], failing the test unless the status is 2xx.
    #[track_caller]
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        match self.request(method, path, body) {
            Ok((status, value)) if (200..300).contains(&status) => value,
            Ok((status, value)) => panic!("{method} {path}: HTTP {status}: {value}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Creates an object (its collection path derived from apiVersion, kind and namespace); an
    /// object that already exists is left as it is.
    pub fn create(&self, object: &Value) -> Result<Value, String> {
        let path = collection_path(object)?;
        match self.request("POST", &path, Some(object))? {
            (status, value) if (200..300).contains(&status) || status == 409 => Ok(value),
            (status, value) => Err(format!("POST {path}: HTTP {status}: {value}")),
        }
    }
}

/// `/api/v1/namespaces/ns/pods` and the like, for the kinds the tests create (the plural is the
/// lower-cased kind + "s" except for the two multus CRDs).
pub fn collection_path(object: &Value) -> Result<String, String> {
    let api_version = object["apiVersion"]
        .as_str()
        .ok_or("object without apiVersion")?;
    let kind = object["kind"].as_str().ok_or("object without kind")?;
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let plural = match kind {
        "NetworkAttachmentDefinition" => "network-attachment-definitions".to_owned(),
        "MultiNetworkPolicy" => "multi-networkpolicies".to_owned(),
        _ => format!("{}s", kind.to_lowercase()),
    };
    Ok(match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}"),
        None => format!("{prefix}/{plural}"),
    })
}
