//! The commands that start a control plane of the project's own: a one-member etcd and a
//! kube-apiserver on it that takes static tokens and signs service-account tokens with one key.
use std::{path::Path, process::Command};

/// A one-member etcd named `name`, its data in `data_dir`, serving `client_url` (its peer
/// endpoint on `peer_url`).
pub fn etcd_command(name: &str, data_dir: &Path, client_url: &str, peer_url: &str) -> Command {
    let mut etcd = Command::new("etcd");
    etcd.args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")]);
    etcd
}

/// `binary` as a kube-apiserver on the etcd at `etcd_url`: its serving certificate in
/// `cert_dir`, the users of the static token file `tokens`, RBAC, service-account tokens signed
/// with `sa_key`, privileged pods allowed (real clusters allow them; the agent DaemonSet is one)
/// and no profiling. The caller adds the address, the port and what its cluster needs besides.
pub fn apiserver_command(
    binary: &Path,
    etcd_url: &str,
    cert_dir: &Path,
    tokens: &Path,
    sa_key: &Path,
) -> Command {
    let mut api = Command::new(binary);
    api.arg(format!("--etcd-servers={etcd_url}"))
        .arg(format!("--cert-dir={}", cert_dir.display()))
        .arg(format!("--token-auth-file={}", tokens.display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!("--service-account-key-file={}", sa_key.display()))
        .arg(format!(
            "--service-account-signing-key-file={}",
            sa_key.display()
        ))
        .arg("--allow-privileged=true")
        .arg("--profiling=false");
    api
}
