//! The control plane: etcd, kube-apiserver (RBAC, service accounts with signed tokens),
//! kube-controller-manager (DaemonSet, service-account and token controllers) and kube-scheduler.
//!
//! The API server listens on the address of the `kubernetes` Service (the first address of the
//! service range), port 443, on a link of its own: pods' in-cluster clients reach it at
//! `KUBERNETES_SERVICE_HOST:443` without a kube-proxy, and its certificate (which the API server
//! generates for that address) verifies against the CA the controller-manager hands to pods.
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use multus_testkit::kube::{Rest, apiserver_command, etcd_command};
use serde_json::json;

use super::{host::HostLink, proc::Proc, wait};
use crate::apiserver::cached;

/// The service range: documentation addresses, never routed anywhere.
pub const SERVICE_RANGE: &str = "203.0.113.240/28";
/// The `kubernetes` Service's address (the range's first), where the API server listens.
pub const API_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 241);
/// The API server's port (the Service's, so no translation is needed).
pub const API_PORT: u16 = 443;

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    admin_token: String,
    admin_kubeconfig: PathBuf,
    ca_file: PathBuf,
    admin: Rest,
    // Stopped in reverse order of start by `stop` (or on drop).
    procs: Vec<Proc>,
    link: Option<HostLink>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl ControlPlane {
    /// Starts everything and waits until the API server is ready and the `default`
    /// ServiceAccount exists (the controllers run). `dir` holds state, `logs` the logs.
    pub fn start(dir: &Path, logs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("certs"))?;
        let link = HostLink::create("mrse2e-api", Some(API_IP))?;
        let admin_token = random_hex()?;
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{admin_token},admin,admin-uid,system:masters\n"),
        )?;
        let sa_key = dir.join("sa.key");
        super::run(
            "openssl",
            &["genrsa", "-out", &sa_key.to_string_lossy(), "2048"],
        )?;
        let mut plane = Self {
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            ca_file: dir.join("certs/apiserver.crt"),
            admin: Rest::new(SocketAddr::from((API_IP, API_PORT)), &admin_token),
            admin_token,
            procs: Vec::new(),
            link: Some(link),
        };

        let (client, peer) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = etcd_command("e2e", &dir.join("etcd"), &etcd_url, &peer_url);
        plane.procs.push(Proc::spawn("etcd", etcd, logs)?);

        let mut api = apiserver_command(
            &cached("kube-apiserver"),
            &etcd_url,
            &dir.join("certs"),
            &tokens,
            &sa_key,
        );
        api.arg(format!("--bind-address={API_IP}"))
            .arg(format!("--advertise-address={API_IP}"))
            .arg(format!("--secure-port={API_PORT}"))
            .arg(format!("--service-cluster-ip-range={SERVICE_RANGE}"))
            // Node names do not resolve here; `kubectl exec` and `logs` dial the node's address.
            .arg("--kubelet-preferred-address-types=InternalIP");
        plane.procs.push(Proc::spawn("kube-apiserver", api, logs)?);
        wait(Duration::from_secs(120), "kube-apiserver /readyz", || {
            plane.check_running()?;
            Ok(matches!(plane.admin.request("GET", "/readyz", None), Ok((200, _))).then_some(()))
        })?;
        plane.write_kubeconfig(&plane.admin_kubeconfig, &plane.admin_token)?;

        let kubeconfig = format!("--kubeconfig={}", plane.admin_kubeconfig.display());
        let mut kcm = Command::new(cached("kube-controller-manager"));
        kcm.arg(&kubeconfig)
            .args(["--leader-elect=false", "--port=0", "--secure-port=0"])
            .arg(format!(
                "--service-account-private-key-file={}",
                sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", plane.ca_file.display()))
            .arg("--profiling=false");
        plane
            .procs
            .push(Proc::spawn("kube-controller-manager", kcm, logs)?);
        let mut scheduler = Command::new(cached("kube-scheduler"));
        scheduler
            .arg(&kubeconfig)
            .args(["--leader-elect=false", "--port=0", "--secure-port=0"])
            .arg("--profiling=false");
        plane
            .procs
            .push(Proc::spawn("kube-scheduler", scheduler, logs)?);
        // The token controller has run once the default account has its token secret.
        wait(
            Duration::from_secs(60),
            "the default ServiceAccount and its token",
            || {
                plane.check_running()?;
                let answer = plane.admin.request(
                    "GET",
                    "/api/v1/namespaces/default/serviceaccounts/default",
                    None,
                );
                Ok(match answer {
                    Ok((200, sa)) => sa["secrets"]
                        .as_array()
                        .is_some_and(|s| !s.is_empty())
                        .then_some(()),
                    _ => None,
                })
            },
        )?;
        Ok(plane)
    }

    /// Fails when one of the processes has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_running)
    }

    /// Writes a kubeconfig for `token` that verifies the server's certificate.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": self.server_url(),
                "certificate-authority": self.ca_file,
            }}],
            "users": [{"name": "e2e", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
            "current-context": "e2e",
        });
        std::fs::write(path, config.to_string())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// `https://203.0.113.241:443`.
    pub fn server_url(&self) -> String {
        format!("https://{API_IP}:{API_PORT}")
    }

    /// The cluster admin's kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Requests as the cluster admin.
    pub fn admin(&self) -> &Rest {
        &self.admin
    }

    /// Stops the processes, newest first, and removes the link.
    pub fn stop(&mut self) {
        while let Some(mut proc) = self.procs.pop() {
            proc.stop(Duration::from_secs(10));
        }
        self.link.take();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
