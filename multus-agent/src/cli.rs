//! The `run` and `status` subcommands: flags over the configuration file.
use std::{net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use multus_agent::{
    config::{AgentConfig, SourceMode},
    dataplane::PinLayout,
    logging, run, status,
};

/// Flags of `multus-agent run`; each overrides the configuration file's key.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The configuration file (JSON, Multus daemon-config style); defaults apply without it.
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// `socketDir`.
    #[arg(long)]
    socket_dir: Option<PathBuf>,
    /// `metricsAddress`.
    #[arg(long)]
    metrics_address: Option<IpAddr>,
    /// `metricsPort` (0: off).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// `nodeName`.
    #[arg(long, env = "MULTUS_NODE_NAME")]
    node_name: Option<String>,
    /// `kubeconfig`: Kubernetes mode with this kubeconfig.
    #[arg(long, conflicts_with = "local_source_dir")]
    kubeconfig: Option<PathBuf>,
    /// `localSourceDir`: standalone mode over this directory.
    #[arg(long)]
    local_source_dir: Option<PathBuf>,
    /// `bpffsDir`.
    #[arg(long)]
    bpffs_dir: Option<PathBuf>,
    /// `dataplaneStateDir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// `logLevel`.
    #[arg(long)]
    log_level: Option<String>,
    /// `chrootDir`: run delegates with their root here (the node's `/`).
    #[arg(long)]
    chroot_dir: Option<PathBuf>,
}

/// Flags of `multus-agent status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Read `bpffsDir` and `dataplaneStateDir` from this configuration file.
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// `bpffsDir`.
    #[arg(long)]
    bpffs_dir: Option<PathBuf>,
    /// `dataplaneStateDir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the policy of attachment ID (where it comes from and its rules, as JSON).
    #[arg(long, value_name = "ID")]
    policy: Option<u32>,
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<AgentConfig> {
    match path {
        Some(path) => AgentConfig::from_file(path).context("reading the agent configuration"),
        None => Ok(AgentConfig::default()),
    }
}

/// `multus-agent run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut config = load(args.config.as_ref())?;
    if let Some(v) = &args.socket_dir {
        config.socket_dir.clone_from(v);
    }
    if let Some(v) = args.metrics_address {
        config.metrics_address = v;
    }
    if let Some(v) = args.metrics_port {
        config.metrics_port = v;
    }
    if let Some(v) = &args.node_name {
        config.node_name = Some(v.clone());
    }
    if let Some(v) = &args.kubeconfig {
        config.source = SourceMode::Kubernetes {
            kubeconfig: Some(v.clone()),
        };
    }
    if let Some(v) = &args.local_source_dir {
        config.source = SourceMode::Standalone { dir: v.clone() };
    }
    if let Some(v) = &args.bpffs_dir {
        config.bpffs_dir.clone_from(v);
    }
    if let Some(v) = &args.state_dir {
        config.dataplane_state_dir.clone_from(v);
    }
    if let Some(v) = &args.log_level {
        config.log_level.clone_from(v);
    }
    if let Some(v) = &args.chroot_dir {
        config.chroot_dir = Some(v.clone());
    }
    logging::init(&config.log_level, config.log_json);
    run::run(config)
}

/// `multus-agent status`.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let config = load(args.config.as_ref())?;
    let layout = PinLayout::new(
        args.bpffs_dir.as_ref().unwrap_or(&config.bpffs_dir),
        args.state_dir
            .as_ref()
            .unwrap_or(&config.dataplane_state_dir),
    );
    let (rows, errors) = status::read(&layout)?;
    for e in &errors {
        eprintln!("warning: {e}");
    }
    if let Some(id) = args.policy {
        let Some(out) = status::policy_json(&rows, id) else {
            anyhow::bail!("no attachment {id}");
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", status::table(&rows));
    }
    Ok(())
}
