//! One real etcd + kube-apiserver per test process, on 127.0.0.1 free ports, shared by the
//! process's tests and killed when the process exits.
use std::{
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::rest::Rest;
use crate::{
    cache::{APISERVER_VAR, APISERVER_VERSION, apiserver_binary},
    netns::unique_name,
    root::ALLOW_SKIP_VAR,
};

/// Token of the cluster admin (group system:masters).
const ADMIN_TOKEN: &str = "multus-test-admin-token";
/// Token of a user named like the ServiceAccount kube-system/multus-rs, so the ClusterRoleBinding
/// in deploy/10-rbac.yaml applies to it exactly as it would to the real service account.
const MULTUS_TOKEN: &str = "multus-test-multus-token";
/// The user name of [`MULTUS_TOKEN`].
pub const MULTUS_USER: &str = "system:serviceaccount:kube-system:multus-rs";

/// A running test cluster.
#[derive(Debug)]
pub struct KubeCluster {
    dir: PathBuf,
    addr: SocketAddr,
    ca_file: PathBuf,
    admin_kubeconfig: PathBuf,
    multus_kubeconfig: PathBuf,
    admin: Rest,
}

/// How a kubeconfig authenticates.
#[derive(Clone, Copy, Debug)]
pub enum KubeconfigAuth<'a> {
    /// An inline bearer token.
    Token(&'a str),
    /// A token file the client re-reads (`tokenFile`).
    TokenFile(&'a Path),
}

static CLUSTER: OnceLock<Result<KubeCluster, String>> = OnceLock::new();
/// Child pids and the work dir, for the exit handler.
static CLEANUP: Mutex<(Vec<i32>, Option<PathBuf>)> = Mutex::new((Vec::new(), None));

impl KubeCluster {
    /// The process's cluster, started on first use. Fails the test loudly without root or
    /// without the kube-apiserver binary (run `cargo xtask test`, which builds it), unless
    /// `MULTUS_TEST_ALLOW_SKIP=1`: then it prints a SKIPPED line and returns `None`.
    #[track_caller]
    pub fn get(test: &str) -> Option<&'static Self> {
        if !crate::require_root(test) {
            return None;
        }
        let binary = apiserver_binary();
        if !binary.is_file() {
            let why = format!(
                "{test} needs the kube-apiserver test binary at {} (set {APISERVER_VAR}); \
                 `cargo xtask test` or `cargo xtask kube-apiserver` builds it",
                binary.display()
            );
            if std::env::var(ALLOW_SKIP_VAR).is_ok_and(|v| v == "1") {
                eprintln!("SKIPPED {test}: {why}; {ALLOW_SKIP_VAR}=1 set");
                return None;
            }
            panic!("{why}");
        }
        match CLUSTER.get_or_init(|| start(&binary)) {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!("starting the test cluster failed: {e}"),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The API server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA bundle that verifies the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A kubeconfig of the cluster admin.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig of the restricted `multus-rs` user (deploy/10-rbac.yaml's ClusterRole).
    pub fn multus_kubeconfig(&self) -> &Path {
        &self.multus_kubeconfig
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> &'static str {
        ADMIN_TOKEN
    }

    /// The restricted `multus-rs` user's bearer token.
    pub fn multus_token(&self) -> &'static str {
        MULTUS_TOKEN
    }

    /// Set-up requests as the admin.
    pub fn admin(&self) -> &Rest {
        &self.admin
    }

    /// `(type, reason, message)` of the Events about pod `namespace/name` with `uid`, oldest
    /// first.
    #[track_caller]
    pub fn pod_events(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Vec<(String, String, String)> {
        let list = self.admin.ok(
            "GET",
            &format!("/api/v1/namespaces/{namespace}/events"),
            None,
        );
        let mut events: Vec<(String, String, String, String)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == name && e["involvedObject"]["uid"] == uid)
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    s(&e["firstTimestamp"]),
                    s(&e["type"]),
                    s(&e["reason"]),
                    s(&e["message"]),
                )
            })
            .collect();
        events.sort();
        events.into_iter().map(|(_, t, r, m)| (t, r, m)).collect()
    }

    /// The directory holding the cluster's files (kubeconfigs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a kubeconfig for `server` (the API server or a proxy in front of it).
    #[track_caller]
    pub fn write_kubeconfig(&self, path: &Path, server: &str, auth: KubeconfigAuth<'_>) {
        write_kubeconfig(path, server, &self.ca_file, &auth)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// A fresh namespace for one test, deleted when dropped.
    #[track_caller]
    pub fn namespace(&'static self, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        self.admin.ok(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
        );
        TestNamespace {
            name,
            cluster: self,
        }
    }
}

/// A Kubernetes namespace of one test. Without a controller-manager the server only marks it
/// terminating; the objects go with the cluster's etcd when the test process ends.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    cluster: &'static KubeCluster,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates an object in this namespace (`metadata.namespace` is filled in); returns it.
    #[track_caller]
    pub fn create(&self, mut object: Value) -> Value {
        object["metadata"]["namespace"] = Value::String(self.name.clone());
        self.cluster
            .admin
            .create(&object)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A token for ServiceAccount `sa` of this namespace (TokenRequest API), bound to Secret
    /// `bound_secret` when given: deleting that Secret revokes the token.
    #[track_caller]
    pub fn service_account_token(&self, sa: &str, bound_secret: Option<(&str, &str)>) -> String {
        let mut spec = json!({"expirationSeconds": 3600});
        if let Some((name, uid)) = bound_secret {
            spec["boundObjectRef"] =
                json!({"apiVersion": "v1", "kind": "Secret", "name": name, "uid": uid});
        }
        let path = format!(
            "/api/v1/namespaces/{}/serviceaccounts/{sa}/token",
            self.name
        );
        let answer = self.cluster.admin.ok(
            "POST",
            &path,
            Some(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})),
        );
        answer["status"]["token"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no token in the TokenRequest answer: {answer}"))
    }
}

impl TestNamespace {
    /// A token for ServiceAccount `sa` bound to a new Secret `secret`: [`Self::revoke`] ends it.
    #[track_caller]
    pub fn revocable_token(&self, sa: &str, secret: &str) -> String {
        let object = self
            .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}}));
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("no uid in {object}"));
        self.service_account_token(sa, Some((secret, uid)))
    }

    /// Deletes Secret `secret`, which revokes the tokens bound to it, and waits until the API
    /// server refuses `token` (its token cache keeps accepting it for up to 10 s).
    #[track_caller]
    pub fn revoke(&self, secret: &str, token: &str) {
        let path = format!("/api/v1/namespaces/{}/secrets/{secret}", self.name);
        self.cluster.admin.ok("DELETE", &path, None);
        let rest = Rest::new(self.cluster.addr(), token);
        let pods = format!("/api/v1/namespaces/{}/pods", self.name);
        crate::until("the token to be revoked", || {
            matches!(rest.request("GET", &pods, None), Ok((401, _))).then_some(())
        });
    }

    /// A ServiceAccount `sa` of this namespace, bound (RoleBinding) to a new ClusterRole with
    /// `rules`; returns a token for it.
    #[track_caller]
    pub fn account_with_rules(&self, sa: &str, rules: &[Value]) -> String {
        let role = format!("{sa}-{}", self.name);
        self.cluster
            .admin
            .create(
                &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                            "metadata": {"name": role}, "rules": rules}),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        self.create(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
        );
        self.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                           "metadata": {"name": sa},
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                           "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": self.name}]}));
        self.service_account_token(sa, None)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let path = format!("/api/v1/namespaces/{}", self.name);
        match self.cluster.admin.request("DELETE", &path, None) {
            Ok((status, _)) if (200..300).contains(&status) || status == 404 => {}
            Ok((status, body)) => eprintln!("cleanup: DELETE {path}: HTTP {status}: {body}"),
            Err(e) => eprintln!("cleanup: {e}"),
        }
    }
}

pub(super) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

extern "C" fn cleanup_at_exit() {
    let Ok(mut state) = CLEANUP.lock() else {
        return;
    };
    for pid in state.0.drain(..) {
        // SAFETY: kill(2) on a pid this process started; no memory is touched.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: reaps our own child; `status` outlives the call.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
    }
    if let Some(dir) = state.1.take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn start(binary: &Path) -> Result<KubeCluster, String> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(unique_name("multus-kube-"));
    std::fs::create_dir_all(dir.join("certs")).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Ok(mut state) = CLEANUP.lock() {
        state.1 = Some(dir.clone());
    }
    // SAFETY: registers a plain extern "C" function without captured state.
    if unsafe { libc::atexit(cleanup_at_exit) } != 0 {
        return Err("atexit failed".to_owned());
    }
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!(
            "{ADMIN_TOKEN},admin,admin-uid,system:masters\n\
             {MULTUS_TOKEN},{MULTUS_USER},multus-uid,\"system:serviceaccounts,system:serviceaccounts:kube-system\"\n"
        ),
    )
    .map_err(|e| format!("writing {}: {e}", tokens.display()))?;
    let sa_key = dir.join("sa.key");
    let key = sa_key.to_string_lossy().into_owned();
    crate::cmd::run("openssl", ["genrsa", "-out", &key, "2048"]).map_err(|e| e.to_string())?;

    let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let etcd = super::etcd_command("multus-test", &dir.join("etcd"), &etcd_url, &peer_url);
    let mut api = super::apiserver_command(binary, &etcd_url, &dir.join("certs"), &tokens, &sa_key);
    api.args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
        .arg(format!("--secure-port={api_port}"))
        // No controller-manager creates `default` service accounts; pods do without them.
        .arg("--disable-admission-plugins=ServiceAccount");
    spawn_owned(vec![("etcd", etcd), ("kube-apiserver", api)], &dir)?;

    let addr = SocketAddr::from(([127, 0, 0, 1], api_port));
    let admin = Rest::new(addr, ADMIN_TOKEN);
    wait_for(
        Duration::from_secs(90),
        "kube-apiserver /readyz",
        &dir,
        || matches!(admin.request("GET", "/readyz", None), Ok((200, _))),
    )?;
    let ca_file = dir.join("certs/apiserver.crt");
    let cluster = KubeCluster {
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        multus_kubeconfig: dir.join("multus.kubeconfig"),
        ca_file,
        addr,
        admin,
        dir,
    };
    let server = cluster.server_url();
    write_kubeconfig(
        &cluster.admin_kubeconfig,
        &server,
        &cluster.ca_file,
        &KubeconfigAuth::Token(ADMIN_TOKEN),
    )?;
    write_kubeconfig(
        &cluster.multus_kubeconfig,
        &server,
        &cluster.ca_file,
        &KubeconfigAuth::Token(MULTUS_TOKEN),
    )?;
    apply_manifests(&cluster)?;
    eprintln!(
        "test cluster: kube-apiserver {APISERVER_VERSION} at {server} ready in {:.1?} (files in {})",
        started.elapsed(),
        cluster.dir.display()
    );
    Ok(cluster)
}

/// Spawns the processes from a thread that lives as long as the process: with
/// PR_SET_PDEATHSIG the kernel kills them when that thread (so the process) dies, even on a
/// crash; the exit handler kills them on a normal exit.
fn spawn_owned(commands: Vec<(&'static str, Command)>, dir: &Path) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_owned();
    std::thread::Builder::new()
        .name("kube-cluster".to_owned())
        .spawn(move || {
            let mut children = Vec::new();
            for (name, mut cmd) in commands {
                let log =
                    |suffix: &str| std::fs::File::create(dir.join(format!("{name}.{suffix}")));
                let (Ok(out), Ok(err)) = (log("out"), log("err")) else {
                    let _ = tx.send(Err(format!("creating the log files of {name}")));
                    return;
                };
                cmd.stdin(Stdio::null()).stdout(out).stderr(err);
                // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                match cmd.spawn() {
                    Ok(child) => {
                        if let (Ok(mut state), Ok(pid)) =
                            (CLEANUP.lock(), i32::try_from(child.id()))
                        {
                            state.0.push(pid);
                        }
                        children.push(child);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("starting {name}: {e}")));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(()));
            // Keep the children's parent thread alive for the rest of the process.
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("spawning the cluster thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the cluster thread died".to_owned())?
}

fn wait_for(
    limit: Duration,
    what: &str,
    dir: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let tail = std::fs::read_to_string(dir.join("kube-apiserver.err"))
        .map(|s| s.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    Err(format!(
        "{what} not ready within {limit:?}; logs in {}; kube-apiserver said (last lines, newest first):\n{tail}",
        dir.display()
    ))
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_file: &Path,
    auth: &KubeconfigAuth<'_>,
) -> Result<(), String> {
    let user = match auth {
        KubeconfigAuth::Token(token) => json!({"token": token}),
        KubeconfigAuth::TokenFile(file) => json!({"tokenFile": file}),
    };
    let mut cluster = json!({"server": server});
    if server.starts_with("https://") {
        cluster["certificate-authority"] = json!(ca_file);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    });
    // JSON is YAML; kubeconfig readers take either.
    std::fs::write(path, config.to_string()).map_err(|e| e.to_string())
}

/// Applies deploy/10-rbac.yaml and the CRDs (`deploy/00-crd-*.yaml`), then waits until the
/// CRDs are established (served).
fn apply_manifests(cluster: &KubeCluster) -> Result<(), String> {
    let root = repo_root();
    let deploy = root.join("deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .map_err(|e| format!("{}: {e}", deploy.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("00-crd-") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    files.insert(0, deploy.join("10-rbac.yaml"));
    let mut crd_names = Vec::new();
    for file in &files {
        for object in read_yaml_documents(file)? {
            if object["kind"] == "CustomResourceDefinition"
                && let Some(name) = object["metadata"]["name"].as_str()
            {
                crd_names.push(name.to_owned());
            }
            cluster
                .admin
                .create(&object)
                .map_err(|e| format!("applying {}: {e}", file.display()))?;
        }
    }
    for name in crd_names {
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
        wait_for(
            Duration::from_secs(30),
            &format!("CRD {name} established"),
            &cluster.dir,
            || {
                cluster
                    .admin
                    .request("GET", &path, None)
                    .ok()
                    .is_some_and(|(_, crd)| crd_established(&crd))
            },
        )?;
    }
    Ok(())
}

/// Whether a CRD's status says Established=True.
pub fn crd_established(crd: &Value) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    })
}

/// The documents of a YAML file, as JSON values (empty documents skipped).
pub fn read_yaml_documents(path: &Path) -> Result<Vec<Value>, String> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}
