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
    /// `healthAddress`.
    #[arg(long)]
    health_address: Option<IpAddr>,
    /// `healthPort` (0: off).
    #[arg(long)]
    health_port: Option<u16>,
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
    #[arg(long, alias = "bpffs")]
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
    /// `logFile`.
    #[arg(long)]
    log_file: Option<PathBuf>,
}

/// Flags of `multus-agent status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Read `bpffsDir` and `dataplaneStateDir` from this configuration file.
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// `bpffsDir`.
    #[arg(long, alias = "bpffs")]
    bpffs_dir: Option<PathBuf>,
    /// `dataplaneStateDir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Only attachments of pods in this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Only this pod's attachments (`NAME`, or `NAMESPACE/NAME`).
    #[arg(long)]
    pod: Option<String>,
    /// Only attachments to this network (the NAD's `NAME`, or `NAMESPACE/NAME`).
    #[arg(long)]
    network: Option<String>,
    /// `table`; `wide` (adds attach mode, container, netns, drops per direction); `pods`
    /// (one line per pod, its interfaces summed); `json`.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The same as `--output json`.
    #[arg(long)]
    json: bool,
    /// Print the policy of attachment ID (where it comes from and its rules, as JSON).
    #[arg(long, value_name = "ID")]
    policy: Option<u32>,
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// An aligned table, one line per attachment.
    Table,
    /// The table with more columns.
    Wide,
    /// One line per pod over all its interfaces.
    Pods,
    /// The rows as JSON.
    Json,
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
    if let Some(v) = args.health_address {
        config.health_address = v;
    }
    if let Some(v) = args.health_port {
        config.health_port = v;
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
    if let Some(v) = &args.log_file {
        config.log_file = Some(v.clone());
    }
    logging::init(
        &config.log_level,
        config.log_json,
        &logging::Destination {
            stderr: config.log_to_stderr,
            file: config
                .log_file
                .as_deref()
                .map(|path| (path, &config.log_options)),
        },
    );
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
    let filter = status::Filter {
        namespace: args.namespace.clone(),
        pod: args.pod.clone(),
        network: args.network.clone(),
    };
    let rows: Vec<_> = rows.into_iter().filter(|r| filter.matches(r)).collect();
    if let Some(id) = args.policy {
        let Some(out) = status::policy_json(&rows, id) else {
            anyhow::bail!("no attachment {id}");
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let output = if args.json { Output::Json } else { args.output };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => print!("{}", status::table(&rows, false)),
        Output::Wide => print!("{}", status::table(&rows, true)),
        Output::Pods => print!("{}", status::pods_table(&rows)),
    }
    Ok(())
}
