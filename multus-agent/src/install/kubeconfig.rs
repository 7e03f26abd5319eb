//! The kubeconfig the `multus` binary on the host uses, built from the pod's service account.
//!
//! The host cannot see the pod's projected token, so the token and CA are copied next to the
//! kubeconfig (`<stem>.token`, `<stem>-ca.crt`, mode 0600) and the kubeconfig names them by
//! their host paths (`tokenFile`, `certificate-authority`). A token rotation then rewrites only
//! the token copy; clients that follow `tokenFile` (multus-kube checks it on every request) pick
//! it up without reloading anything. `TokenMode::Inline` writes the token into the kubeconfig
//! instead, for clients that do not read `tokenFile`; the kubeconfig is rewritten on rotation.
//!
//! Every sync compares what would be written with what is on disk and writes only files that
//! differ: the token and CA first, the kubeconfig last, so it never names a missing file.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::json;

use super::{
    atomic,
    error::{InstallError, Result},
};

/// Where the pod's service-account files are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// File mode of everything written here: credentials.
const MODE: u32 = 0o600;

/// How the kubeconfig carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// `tokenFile` naming a copy of the token.
    #[default]
    File,
    /// `token` with the token itself.
    Inline,
}

/// Where and how to write the kubeconfig.
#[derive(Debug, Clone)]
pub struct KubeconfigOptions {
    /// Where the kubeconfig is written (as this process sees it).
    pub path: PathBuf,
    /// The same file as the host sees it; the token and CA copies are named relative to it.
    pub host_path: PathBuf,
    /// The service-account directory holding `token` and `ca.crt`.
    pub service_account_dir: PathBuf,
    /// The API server URL.
    pub server: String,
    /// Token in a file or inline.
    pub token_mode: TokenMode,
}

/// The API server URL from `KUBERNETES_SERVICE_HOST`/`_PORT` (and `_PROTOCOL`, default https),
/// `None` when not running in a pod.
pub fn server_from_env(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty())?;
    let protocol = env("KUBERNETES_SERVICE_PROTOCOL")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "https".into());
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host,
    };
    Some(format!("{protocol}://{host}:{port}"))
}

/// The sibling of `kubeconfig` named `<stem><suffix>`.
fn sibling(kubeconfig: &Path, suffix: &str) -> PathBuf {
    let stem = kubeconfig
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "multus".into());
    kubeconfig.with_file_name(format!("{stem}{suffix}"))
}

impl KubeconfigOptions {
    /// The token copy, as this process sees it.
    pub fn token_path(&self) -> PathBuf {
        sibling(&self.path, ".token")
    }

    /// The CA copy, as this process sees it.
    pub fn ca_path(&self) -> PathBuf {
        sibling(&self.path, "-ca.crt")
    }

    fn kube_error(&self, reason: impl Into<String>) -> InstallError {
        InstallError::Kubeconfig {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Renders the kubeconfig for `token`.
    fn render(&self, token: &[u8]) -> Result<Vec<u8>> {
        let mut user = serde_json::Map::new();
        match self.token_mode {
            TokenMode::File => {
                let host_token = sibling(&self.host_path, ".token");
                user.insert("tokenFile".into(), host_token.display().to_string().into());
            }
            TokenMode::Inline => {
                let token = std::str::from_utf8(token)
                    .map_err(|_| self.kube_error("the service-account token is not UTF-8"))?;
                user.insert("token".into(), token.trim().into());
            }
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server,
                "certificate-authority": sibling(&self.host_path, "-ca.crt").display().to_string(),
            }}],
            "users": [{"name": "multus", "user": user}],
            "contexts": [{"name": "multus-context", "context": {"cluster": "local", "user": "multus"}}],
            "current-context": "multus-context",
        });
        let yaml =
            serde_yaml::to_string(&doc).map_err(|e| self.kube_error(format!("encoding: {e}")))?;
        Ok(format!(
            "# Kubeconfig of the multus CNI plugin, written by multus-agent install.\n{yaml}"
        )
        .into_bytes())
    }

    /// Brings the kubeconfig, token and CA copies up to date with the service account; returns
    /// the files it rewrote.
    pub fn sync(&self) -> Result<Vec<PathBuf>> {
        let read = |name: &str| {
            let path = self.service_account_dir.join(name);
            fs::read(&path).map_err(|e| InstallError::io("reading", path, e))
        };
        let token = read("token")?;
        if token.iter().all(u8::is_ascii_whitespace) {
            return Err(self.kube_error(format!(
                "the service-account token in {} is empty",
                self.service_account_dir.display()
            )));
        }
        let ca = read("ca.crt")?;
        let dir = self
            .path
            .parent()
            .ok_or_else(|| self.kube_error("has no directory"))?;
        fs::create_dir_all(dir).map_err(|e| InstallError::io("creating", dir, e))?;

        let mut files = vec![(self.ca_path(), ca)];
        match self.token_mode {
            TokenMode::File => files.push((self.token_path(), token.clone())),
            // A token copy left from file mode would be a stale credential on the host.
            TokenMode::Inline => remove_if_present(&self.token_path())?,
        }
        files.push((self.path.clone(), self.render(&token)?));
        let mut written = Vec::new();
        for (path, bytes) in files {
            if atomic::read_optional(&path)?.as_deref() != Some(bytes.as_slice()) {
                atomic::write(&path, &bytes, MODE)?;
                written.push(path);
            }
        }
        Ok(written)
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    multus_cni::files::remove_if_exists(path)
        .map(drop)
        .map_err(|e| InstallError::io("removing", path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn options(dir: &Path, mode: TokenMode) -> KubeconfigOptions {
        let sa = dir.join("sa");
        fs::create_dir_all(&sa).unwrap();
        fs::write(sa.join("token"), "t1").unwrap();
        fs::write(sa.join("ca.crt"), "CA").unwrap();
        KubeconfigOptions {
            path: dir.join("host/etc/cni/net.d/multus.d/multus.kubeconfig"),
            host_path: "/etc/cni/net.d/multus.d/multus.kubeconfig".into(),
            service_account_dir: sa,
            server: "https://[2001:db8::1]:443".into(),
            token_mode: mode,
        }
    }

    fn yaml(path: &Path) -> serde_yaml::Value {
        serde_yaml::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn server_from_env_brackets_ipv6() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(server_from_env(env(&[])), None);
        assert_eq!(
            server_from_env(env(&[
                ("KUBERNETES_SERVICE_HOST", "192.0.2.1"),
                ("KUBERNETES_SERVICE_PORT", "6443")
            ])),
            Some("https://192.0.2.1:6443".into())
        );
        assert_eq!(
            server_from_env(env(&[
                ("KUBERNETES_SERVICE_HOST", "2001:db8::1"),
                ("KUBERNETES_SERVICE_PORT", "443")
            ])),
            Some("https://[2001:db8::1]:443".into())
        );
    }

    #[test]
    fn token_file_mode_rewrites_only_the_token_copy() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path(), TokenMode::File);
        let written = o.sync().unwrap();
        assert_eq!(written, [o.ca_path(), o.token_path(), o.path.clone()]);
        for p in &written {
            assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let y = yaml(&o.path);
        assert_eq!(
            y["users"][0]["user"]["tokenFile"].as_str(),
            Some("/etc/cni/net.d/multus.d/multus.token")
        );
        assert_eq!(
            y["clusters"][0]["cluster"]["certificate-authority"].as_str(),
            Some("/etc/cni/net.d/multus.d/multus-ca.crt")
        );
        assert_eq!(
            y["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://[2001:db8::1]:443")
        );
        assert_eq!(y["current-context"].as_str(), Some("multus-context"));
        assert!(o.sync().unwrap().is_empty(), "nothing changed");

        fs::write(o.service_account_dir.join("token"), "t2").unwrap();
        assert_eq!(o.sync().unwrap(), [o.token_path()]);
        assert_eq!(fs::read(o.token_path()).unwrap(), b"t2");
    }

    #[test]
    fn inline_mode_rewrites_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path(), TokenMode::Inline);
        fs::create_dir_all(o.path.parent().unwrap()).unwrap();
        fs::write(o.token_path(), "stale").unwrap();
        o.sync().unwrap();
        assert!(!o.token_path().exists(), "a stale token copy is removed");
        assert_eq!(
            yaml(&o.path)["users"][0]["user"]["token"].as_str(),
            Some("t1")
        );
        fs::write(o.service_account_dir.join("token"), "t2\n").unwrap();
        assert_eq!(o.sync().unwrap(), std::slice::from_ref(&o.path));
        assert_eq!(
            yaml(&o.path)["users"][0]["user"]["token"].as_str(),
            Some("t2")
        );
    }

    #[test]
    fn missing_or_empty_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path(), TokenMode::File);
        fs::write(o.service_account_dir.join("token"), " \n").unwrap();
        let err = o.sync().unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        fs::remove_file(o.service_account_dir.join("token")).unwrap();
        let err = o.sync().unwrap_err();
        assert!(err.to_string().contains("sa/token"), "{err}");
        assert!(!o.path.exists());
    }
}
