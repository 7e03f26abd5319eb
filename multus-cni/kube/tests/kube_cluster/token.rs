//! A long-lived client follows its rotated service-account token, and a revoked token fails
//! clearly as Unauthorized. Tokens are real bound tokens (TokenRequest) revoked by deleting the
//! Secret they are bound to.
use std::path::Path;

use multus_kube::{ClientSource, ErrorKind, KubeApi};
use multus_testkit::kube::{KubeconfigAuth, TestNamespace, until};
use serde_json::json;

use super::{cluster, create_pod, facade, test_options};

/// A ServiceAccount `rot` bound to deploy/10-rbac.yaml's ClusterRole in the namespace, and a pod
/// to read.
fn prepare(ns: &TestNamespace) {
    create_pod(ns, "p", &json!({}));
    ns.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "rot"}}));
    ns.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                     "metadata": {"name": "rot"},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "multus-rs"},
                     "subjects": [{"kind": "ServiceAccount", "name": "rot", "namespace": ns.name()}]}));
}

/// A plain kube-rs client from the same kubeconfig, for comparison: kube-rs re-reads a
/// `tokenFile` only once a minute.
struct PlainKubeRs {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

impl PlainKubeRs {
    fn new(kubeconfig: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        Self { runtime, client }
    }

    fn get_pod_status(&self, ns: &str) -> Option<u16> {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.client.clone(), ns);
        match self.runtime.block_on(async { api.get("p").await }) {
            Ok(_) => None,
            Err(kube::Error::Api(status)) => Some(status.code),
            Err(e) => panic!("{e}"),
        }
    }
}

/// The scenario: works with token 1; token 2 replaces it in the file and token 1 is revoked:
/// the same client keeps working; token 2 revoked: a clear Unauthorized. With `plain`, a plain
/// kube-rs client from that kubeconfig is shown to keep the revoked token instead.
fn rotation(
    ns: &TestNamespace,
    install: impl Fn(&str),
    api: impl FnOnce() -> KubeApi,
    plain: Option<&Path>,
) {
    prepare(ns);
    let t1 = ns.revocable_token("rot", "s1");
    install(&t1);
    let api = api();
    until("the new account to be usable", || {
        api.get_pod(ns.name(), "p").ok()
    });
    let plain = plain.map(PlainKubeRs::new);
    if let Some(plain) = &plain {
        assert_eq!(
            plain.get_pod_status(ns.name()),
            None,
            "kube-rs works with token 1"
        );
    }

    let t2 = ns.revocable_token("rot", "s2");
    install(&t2);
    ns.revoke("s1", &t1);
    if let Some(plain) = &plain {
        assert_eq!(
            plain.get_pod_status(ns.name()),
            Some(401),
            "kube-rs 5 still sends the revoked token (it re-reads the file once a minute)"
        );
    }
    let pod = api.get_pod(ns.name(), "p");
    assert!(
        pod.is_ok(),
        "the client did not pick up the rotated token: {pod:?}"
    );

    ns.revoke("s2", &t2);
    let err = api.get_pod(ns.name(), "p").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    eprintln!("revoked: {err}");
}

fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn kubeconfig_token_file_follows_rotation() {
    let Some(cluster) = cluster("kubeconfig_token_file_follows_rotation") else {
        return;
    };
    let ns = cluster.namespace("rotk");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(
        &kubeconfig,
        &cluster.server_url(),
        KubeconfigAuth::TokenFile(&token),
    );
    rotation(
        &ns,
        |t| replace_file(&token, t),
        || facade(&kubeconfig),
        Some(&kubeconfig),
    );
}

/// Kubelet's projected volume layout: `token -> ..data/token`, `..data -> ..<stamp>`, and a
/// rotation swaps `..data` atomically.
fn install_projected(
    dir: &Path,
    generation: &std::cell::Cell<u32>,
    ca: &Path,
    ns: &str,
    token: &str,
) {
    let n = generation.get() + 1;
    generation.set(n);
    let data = dir.join(format!("..gen{n}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("token"), token).unwrap();
    std::fs::copy(ca, data.join("ca.crt")).unwrap();
    std::fs::write(data.join("namespace"), ns).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..gen{n}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["token", "ca.crt", "namespace"] {
        let link = dir.join(file);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
    if n > 1 {
        std::fs::remove_dir_all(dir.join(format!("..gen{}", n - 1))).unwrap();
    }
}

#[test]
fn service_account_dir_follows_projected_rotation() {
    let Some(cluster) = cluster("service_account_dir_follows_projected_rotation") else {
        return;
    };
    let ns = cluster.namespace("rotp");
    let dir = tempfile::tempdir().unwrap();
    let generation = std::cell::Cell::new(0);
    let source = ClientSource::ServiceAccount {
        server: cluster.server_url(),
        dir: dir.path().to_owned(),
    };
    rotation(
        &ns,
        |t| install_projected(dir.path(), &generation, cluster.ca_file(), ns.name(), t),
        || KubeApi::new(&source, test_options()).unwrap(),
        None,
    );
}
