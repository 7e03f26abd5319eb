//! The `multus-agent install` command line. Flags and defaults follow Multus's
//! thin_entrypoint (`--cni-bin-dir`, `--cni-conf-dir`, ...); every flag can also be set through
//! the environment variable named like Multus's old entrypoint script's (`CNI_CONF_DIR`,
//! `MULTUS_LOG_LEVEL`, ...).
use std::{path::PathBuf, time::Duration};

use clap::Args;
use multus_cni::config::LogLevel;

use super::{
    ConfigOptions, Installer, Mode, Options,
    error::{InstallError, Result},
    generate::{self, DEFAULT_SOCKET_DIR},
    kubeconfig::{self, KubeconfigOptions, SERVICE_ACCOUNT_DIR, TokenMode},
};

/// Options of `multus-agent install`.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// The host's CNI bin directory, as mounted in this container.
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The host's CNI configuration directory, as mounted in this container.
    #[arg(long, env = "CNI_CONF_DIR", default_value = "/host/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The multus-cni binary to install [default: multus-cni next to this executable].
    #[arg(long, env = "MULTUS_BIN_FILE")]
    pub multus_bin_file: Option<PathBuf>,
    /// Do not install the binary.
    #[arg(
        long,
        env = "MULTUS_SKIP_BINARY_COPY",
        alias = "skip-multus-binary-copy"
    )]
    pub skip_binary_copy: bool,
    /// cniVersion of the generated configuration [default: the primary's].
    #[arg(long, env = "MULTUS_CNI_VERSION")]
    pub cni_version: Option<String>,
    /// Where the primary CNI configuration is looked for [default: --cni-conf-dir].
    #[arg(long, env = "MULTUS_AUTOCONF_DIR")]
    pub multus_autoconfig_dir: Option<PathBuf>,
    /// Use this file of the autoconfig directory as the primary instead of the first one.
    #[arg(long, env = "MULTUS_MASTER_CNI_FILE_NAME")]
    pub master_cni_file_name: Option<String>,
    /// Name the configuration like the primary instead of multus-cni-network.
    #[arg(long, env = "MULTUS_OVERRIDE_NETWORK_NAME")]
    pub override_network_name: bool,
    /// Pods may only use networks of their own namespace (and the global namespaces).
    #[arg(long, env = "MULTUS_NAMESPACE_ISOLATION")]
    pub namespace_isolation: bool,
    /// Namespaces whose networks every pod may use, comma separated.
    #[arg(long, env = "MULTUS_GLOBAL_NAMESPACES")]
    pub global_namespaces: Option<String>,
    /// Readiness indicator file: the configuration is generated only once it exists, and the
    /// plugin checks it on every ADD. Must be visible at this path here and on the host.
    #[arg(long, env = "MULTUS_READINESS_INDICATOR_FILE")]
    pub readiness_indicator_file: Option<PathBuf>,
    /// logLevel of the CNI plugin: debug, verbose, error or panic.
    #[arg(long, alias = "log-level", env = "MULTUS_LOG_LEVEL")]
    pub multus_log_level: Option<String>,
    /// logFile of the CNI plugin (a host path).
    #[arg(long, alias = "log-file", env = "MULTUS_LOG_FILE")]
    pub multus_log_file: Option<PathBuf>,
    /// logToStderr of the CNI plugin.
    #[arg(
        long,
        env = "MULTUS_LOG_TO_STDERR",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub multus_log_to_stderr: bool,
    /// binDir of the CNI plugin: an extra plugin directory searched first (a host path).
    #[arg(long, env = "ADDITIONAL_BIN_DIR")]
    pub additional_bin_dir: Option<PathBuf>,
    /// confDir of the CNI plugin (Multus's default /etc/cni/multus/net.d when unset).
    #[arg(long, env = "MULTUS_CNI_CONF_DIR")]
    pub multus_cni_conf_dir: Option<PathBuf>,
    /// cniDir of the CNI plugin, its DEL cache (/var/lib/cni/multus when unset).
    #[arg(long, env = "MULTUS_CNI_DIR")]
    pub multus_cni_dir: Option<PathBuf>,
    /// Thick mode: install the binary as multus-shim, reference the primary as clusterNetwork
    /// and point the shim at the agent's socket directory.
    #[arg(long, env = "MULTUS_THICK")]
    pub thick: bool,
    /// The agent's socket directory written for the shim (thick mode).
    #[arg(long, env = "MULTUS_DAEMON_SOCKET_DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub daemon_socket_dir: PathBuf,
    /// Thick mode: the agent's configuration file. Its socketDir, bpffsDir,
    /// dataplaneStateDir, cniDir and binDir are written for the shim, whose DEL runs from them
    /// while the agent is down (socketDir wins over --daemon-socket-dir).
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    pub agent_config: Option<PathBuf>,
    /// Where to write the kubeconfig [default: <cni-conf-dir>/multus.d/multus.kubeconfig].
    #[arg(long, env = "MULTUS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig's path as the host sees it (written into the configuration; the token and
    /// CA copies next to it are named from it).
    #[arg(
        long,
        alias = "multus-kubeconfig-file-host",
        env = "MULTUS_KUBECONFIG_FILE_HOST",
        default_value = "/etc/cni/net.d/multus.d/multus.kubeconfig"
    )]
    pub kubeconfig_host_path: PathBuf,
    /// Write the token into the kubeconfig instead of naming a token file.
    #[arg(long, env = "MULTUS_KUBECONFIG_INLINE_TOKEN")]
    pub kubeconfig_inline_token: bool,
    /// Do not write or reference a kubeconfig even when running in a pod.
    #[arg(long, env = "MULTUS_SKIP_KUBECONFIG")]
    pub skip_kubeconfig: bool,
    /// The service-account directory (token, ca.crt).
    #[arg(long, env = "MULTUS_SERVICE_ACCOUNT_DIR", default_value = SERVICE_ACCOUNT_DIR)]
    pub service_account_dir: PathBuf,
    /// Keep running: regenerate when the primary changes, refresh the token copy.
    #[arg(long, env = "MULTUS_WATCH", conflicts_with = "once")]
    pub watch: bool,
    /// Generate once and exit (the default).
    #[arg(long)]
    pub once: bool,
    /// Without --watch: seconds to wait for the primary configuration.
    #[arg(long, env = "MULTUS_PRIMARY_WAIT", default_value_t = 120)]
    pub primary_wait: u64,
    /// Milliseconds between two checks when inotify reports nothing.
    #[arg(long, env = "MULTUS_POLL_INTERVAL", default_value_t = 1000)]
    pub poll_interval: u64,
}

impl InstallArgs {
    /// The options these flags stand for; `env` gives the environment (for the API server).
    pub fn to_options(&self, env: impl Fn(&str) -> Option<String>) -> Result<Options> {
        let cni_version = self
            .cni_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(generate::parse_version)
            .transpose()?;
        let log_level = match self.multus_log_level.as_deref().filter(|l| !l.is_empty()) {
            None => None,
            Some(l) => Some(LogLevel::parse(l).ok_or_else(|| InstallError::Option {
                option: "--multus-log-level",
                reason: format!("{l:?} is not one of debug, verbose, error, panic"),
            })?),
        };
        if self.poll_interval == 0 {
            return Err(InstallError::Option {
                option: "--poll-interval",
                reason: "must be at least 1 ms".into(),
            });
        }
        let multus_bin_file = if self.skip_binary_copy {
            None
        } else {
            Some(match &self.multus_bin_file {
                Some(f) => f.clone(),
                None => default_bin_file()?,
            })
        };
        let kubeconfig = self.kubeconfig_options(&env);
        let agent = match (&self.agent_config, self.thick) {
            (Some(file), true) => {
                Some(crate::config::AgentConfig::from_file(file).map_err(|e| {
                    InstallError::Option {
                        option: "--agent-config",
                        reason: e.to_string(),
                    }
                })?)
            }
            _ => None,
        };
        let mode = if self.thick {
            Mode::Thick {
                daemon_socket_dir: agent
                    .as_ref()
                    .map_or_else(|| self.daemon_socket_dir.clone(), |a| a.socket_dir.clone()),
            }
        } else {
            Mode::Thin
        };
        let mut shim_keys = Vec::new();
        let (mut bin_dir, mut cni_dir) =
            (self.additional_bin_dir.clone(), self.multus_cni_dir.clone());
        if let Some(agent) = &agent {
            shim_keys.push(("bpffsDir", agent.bpffs_dir.clone()));
            shim_keys.push(("dataplaneStateDir", agent.dataplane_state_dir.clone()));
            let key = |k: &str| {
                agent
                    .cni_overrides
                    .get(k)
                    .and_then(serde_json::Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            };
            bin_dir = bin_dir.or_else(|| key("binDir"));
            cni_dir = cni_dir.or_else(|| key("cniDir"));
        }
        let config = ConfigOptions {
            mode,
            cni_version,
            override_network_name: self.override_network_name,
            kubeconfig: kubeconfig.as_ref().map(|k| k.host_path.clone()),
            namespace_isolation: self.namespace_isolation,
            global_namespaces: self.global_namespaces.clone().filter(|g| !g.is_empty()),
            log_level,
            log_file: self.multus_log_file.clone(),
            log_to_stderr: self.multus_log_to_stderr,
            readiness_indicator_file: self.readiness_indicator_file.clone(),
            bin_dir,
            conf_dir: self.multus_cni_conf_dir.clone(),
            cni_dir,
            shim_keys,
        };
        Ok(Options {
            cni_bin_dir: self.cni_bin_dir.clone(),
            cni_conf_dir: self.cni_conf_dir.clone(),
            autoconfig_dir: self
                .multus_autoconfig_dir
                .clone()
                .unwrap_or_else(|| self.cni_conf_dir.clone()),
            master_cni_file_name: self.master_cni_file_name.clone().filter(|n| !n.is_empty()),
            multus_bin_file,
            config,
            kubeconfig,
            watch: self.watch,
            primary_wait: Duration::from_secs(self.primary_wait),
            tick: Duration::from_millis(self.poll_interval),
            stop_on_signals: true,
        })
    }

    /// The kubeconfig to maintain: only inside a pod (the API server's address comes from
    /// the environment kubelet sets) and unless skipped.
    fn kubeconfig_options(
        &self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Option<KubeconfigOptions> {
        if self.skip_kubeconfig {
            return None;
        }
        let Some(server) = kubeconfig::server_from_env(env) else {
            tracing::info!(
                "KUBERNETES_SERVICE_HOST/PORT are not set (not in a pod): no kubeconfig is written"
            );
            return None;
        };
        Some(KubeconfigOptions {
            path: self
                .kubeconfig
                .clone()
                .unwrap_or_else(|| self.cni_conf_dir.join("multus.d").join("multus.kubeconfig")),
            host_path: self.kubeconfig_host_path.clone(),
            service_account_dir: self.service_account_dir.clone(),
            server,
            token_mode: if self.kubeconfig_inline_token {
                TokenMode::Inline
            } else {
                TokenMode::File
            },
        })
    }
}

/// `multus-cni` in the directory of the running executable (where the image puts both).
fn default_bin_file() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| InstallError::Option {
        option: "--multus-bin-file",
        reason: format!("no default: cannot find the running executable ({e})"),
    })?;
    Ok(exe.with_file_name("multus-cni"))
}

/// Runs `multus-agent install` with logs on stderr (level from `RUST_LOG`, default info).
pub fn run(args: &InstallArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let options = args.to_options(|k| std::env::var(k).ok())?;
    Installer::new(options).run()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: InstallArgs,
    }

    fn options(argv: &[&str], env: &[(&str, &str)]) -> Result<Options> {
        let cmd =
            Cmd::try_parse_from(std::iter::once("install").chain(argv.iter().copied())).unwrap();
        cmd.args.to_options(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_follow_multus() {
        let o = options(&["--multus-bin-file", "/bin/multus-cni"], &[]).unwrap();
        assert_eq!(o.cni_bin_dir, Path::new("/host/opt/cni/bin"));
        assert_eq!(o.cni_conf_dir, Path::new("/host/etc/cni/net.d"));
        assert_eq!(o.autoconfig_dir, o.cni_conf_dir);
        assert_eq!(
            o.multus_bin_file.as_deref(),
            Some(Path::new("/bin/multus-cni"))
        );
        assert_eq!(o.config.mode, Mode::Thin);
        assert!(o.config.log_to_stderr);
        assert!(o.kubeconfig.is_none(), "not in a pod");
        assert!(o.config.kubeconfig.is_none());
        assert!(!o.watch);
        assert_eq!(o.primary_wait, Duration::from_secs(120));
    }

    #[test]
    fn in_a_pod_the_kubeconfig_is_maintained() {
        let env = [
            ("KUBERNETES_SERVICE_HOST", "192.0.2.10"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        let o = options(&["--cni-conf-dir", "/c", "--thick", "--watch"], &env).unwrap();
        let k = o.kubeconfig.unwrap();
        assert_eq!(k.path, Path::new("/c/multus.d/multus.kubeconfig"));
        assert_eq!(
            k.host_path,
            Path::new("/etc/cni/net.d/multus.d/multus.kubeconfig")
        );
        assert_eq!(k.server, "https://192.0.2.10:443");
        assert_eq!(k.token_mode, TokenMode::File);
        assert_eq!(o.config.kubeconfig.as_deref(), Some(k.host_path.as_path()));
        assert_eq!(
            o.config.mode,
            Mode::Thick {
                daemon_socket_dir: DEFAULT_SOCKET_DIR.into()
            }
        );
        assert!(o.watch);
        let o = options(&["--skip-kubeconfig", "--skip-binary-copy"], &env).unwrap();
        assert!(o.kubeconfig.is_none() && o.multus_bin_file.is_none());
    }

    #[test]
    fn flag_values_are_checked() {
        let o = options(
            &[
                "--multus-log-to-stderr=false",
                "--multus-log-level",
                "Debug",
            ],
            &[],
        )
        .unwrap();
        assert!(!o.config.log_to_stderr);
        assert_eq!(o.config.log_level, Some(LogLevel::Debug));
        assert!(
            options(&["--multus-log-to-stderr"], &[])
                .unwrap()
                .config
                .log_to_stderr
        );
        let err = options(&["--multus-log-level", "loud"], &[]).unwrap_err();
        assert!(err.to_string().contains("--multus-log-level"), "{err}");
        let err = options(&["--cni-version", "0.2.1"], &[]).unwrap_err();
        assert!(err.to_string().contains("--cni-version"), "{err}");
        let err = options(&["--poll-interval", "0"], &[]).unwrap_err();
        assert!(err.to_string().contains("--poll-interval"), "{err}");
        assert!(
            Cmd::try_parse_from(["install", "--watch", "--once"]).is_err(),
            "--watch and --once conflict"
        );
    }

    /// Flags of Multus's Go installer that are refused here (docs/migrating.md lists them): a
    /// DaemonSet copied from Multus fails at once, naming the flag, instead of half-working.
    #[test]
    fn multus_installer_flags_that_are_refused_say_so() {
        for argv in [
            &["--multus-conf-file=auto"][..],
            &["--namespace-isolation=true"][..],
        ] {
            let flag = argv[0].split('=').next().unwrap();
            let err =
                match Cmd::try_parse_from(std::iter::once("install").chain(argv.iter().copied())) {
                    Ok(_) => panic!("{argv:?} was accepted"),
                    Err(e) => e.to_string(),
                };
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }
}
