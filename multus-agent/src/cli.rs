//! The `run` and `status` subcommands: flags over the configuration file.
use std::{net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use multus_agent::{
    config::{AgentConfig, SourceMode},
    dataplane::PinLayout,
    explain, logging, observe,
    policy::model::Protocol,
    run, status,
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

/// Where the dataplane's pins and records are (`status`, `explain`).
#[derive(clap::Args)]
pub struct StateArgs {
    /// Read `bpffsDir` and `dataplaneStateDir` from this configuration file.
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// `bpffsDir`.
    #[arg(long, alias = "bpffs")]
    bpffs_dir: Option<PathBuf>,
    /// `dataplaneStateDir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    fn layout(&self) -> anyhow::Result<PinLayout> {
        let config = load(self.config.as_ref())?;
        Ok(PinLayout::new(
            self.bpffs_dir.as_ref().unwrap_or(&config.bpffs_dir),
            self.state_dir
                .as_ref()
                .unwrap_or(&config.dataplane_state_dir),
        ))
    }
}

/// Which pods and networks to show (`status`, `observe`).
#[derive(clap::Args)]
pub struct PodSelection {
    /// Only pods in this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Only this pod (`NAME`, or `NAMESPACE/NAME`).
    #[arg(long)]
    pod: Option<String>,
    /// Only this network (the NAD's `NAME`, or `NAMESPACE/NAME`).
    #[arg(long)]
    network: Option<String>,
}

/// Flags of `multus-agent status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    select: PodSelection,
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

/// Flags of `multus-agent observe`.
#[derive(clap::Args)]
pub struct ObserveArgs {
    /// Read `socketDir` from this configuration file.
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// `socketDir`: where the running agent listens.
    #[arg(long)]
    socket_dir: Option<PathBuf>,
    #[command(flatten)]
    select: PodSelection,
    /// Only `ingress` (to the pod) or `egress` (from it).
    #[arg(long, value_parser = ["ingress", "egress"])]
    direction: Option<String>,
    /// Only this reason: policy_deny, default_deny, spoofed, malformed, header_chain.
    #[arg(long, value_parser = ["policy_deny", "default_deny", "spoofed", "malformed", "header_chain"])]
    reason: Option<String>,
    /// Only the last N matching drops.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Only drops since this time (RFC 3339, `2026-12-03T09:00:00Z`) or this long ago (`90s`,
    /// `5m`, `1h30m`).
    #[arg(long, value_name = "TIME|DURATION")]
    since: Option<String>,
    /// Keep printing new drops as they come (every second) until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// `table` or `json` (JSON lines).
    #[arg(long, short = 'o', value_enum, default_value_t = ObserveOutput::Table)]
    output: ObserveOutput,
}

/// Flags of `multus-agent explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The pod, `NAMESPACE/NAME` (`NAME` alone: in `default`).
    pod: String,
    /// The interface inside the pod (needed when it has several attachments).
    #[arg(long, short = 'i')]
    interface: Option<String>,
    /// The network instead of the interface (the NAD's `NAME`, or `NAMESPACE/NAME`).
    #[arg(long, conflicts_with = "interface")]
    network: Option<String>,
    /// `ingress` (the pod receives from the peer) or `egress` (the pod sends to it).
    #[arg(long, value_parser = ["ingress", "egress"])]
    direction: String,
    /// The other end's address.
    #[arg(long)]
    peer: IpAddr,
    /// The protocol.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// The destination port (TCP, UDP, SCTP).
    #[arg(long, required_if_eq_any = [("protocol", "tcp"), ("protocol", "udp"), ("protocol", "sctp")])]
    port: Option<u16>,
    /// `text` or `json`.
    #[arg(long, short = 'o', value_enum, default_value_t = ExplainOutput::Text)]
    output: ExplainOutput,
}

/// How `explain` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    /// A few lines.
    Text,
    /// One JSON object.
    Json,
}

/// How `observe` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObserveOutput {
    /// An aligned table, one line per drop.
    Table,
    /// One JSON object per line.
    Json,
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

/// `multus-agent observe`.
pub fn observe(args: &ObserveArgs) -> anyhow::Result<()> {
    let config = load(args.config.as_ref())?;
    let socket_dir = args.socket_dir.as_ref().unwrap_or(&config.socket_dir);
    let select = &args.select;
    let (namespace, pod) = match select.pod.as_deref().and_then(|p| p.split_once('/')) {
        Some((ns, name)) => (Some(ns.to_owned()), Some(name.to_owned())),
        None => (select.namespace.clone(), select.pod.clone()),
    };
    let mut filter = observe::Filter {
        namespace,
        pod,
        network: select.network.clone(),
        direction: args.direction.clone(),
        reason: args.reason.clone(),
        last: args.last,
        after: None,
        since_ms: args
            .since
            .as_deref()
            .map(|s| observe::since_ms(s, std::time::SystemTime::now()))
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    // Following goes on from the newest drop of the log, whatever the first batch showed.
    let mut newest = 0;
    if args.follow {
        let any = observe::Filter {
            last: Some(1),
            ..observe::Filter::default()
        };
        newest = observe::fetch(socket_dir, &any)?
            .last()
            .map_or(0, |r| r.seq);
    }
    let mut header = true;
    loop {
        let records = observe::fetch(socket_dir, &filter)?;
        match args.output {
            ObserveOutput::Json => {
                for r in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
            }
            ObserveOutput::Table => {
                let table = observe::table(&records);
                let body = if header {
                    table.as_str()
                } else {
                    table.split_once('\n').map_or("", |(_, rows)| rows)
                };
                print!("{body}");
            }
        }
        if !args.follow {
            return Ok(());
        }
        header = false;
        newest = records.last().map_or(newest, |r| r.seq.max(newest));
        filter.after = Some(newest);
        filter.last = None;
        std::io::Write::flush(&mut std::io::stdout())?;
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `multus-agent status`.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let layout = args.state.layout()?;
    let (rows, errors) = status::read(&layout)?;
    for e in &errors {
        eprintln!("warning: {e}");
    }
    let filter = status::Filter {
        namespace: args.select.namespace.clone(),
        pod: args.select.pod.clone(),
        network: args.select.network.clone(),
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

/// `multus-agent explain`.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    use multus_agent::policy::eval::{Direction, Packet, Traffic};
    let layout = args.state.layout()?;
    let port = args.port.unwrap_or(0);
    let traffic = match args.protocol {
        Protocol::Tcp => Traffic::Tcp(port),
        Protocol::Udp => Traffic::Udp(port),
        Protocol::Sctp => Traffic::Sctp(port),
        Protocol::Icmp => Traffic::Icmp,
        Protocol::Icmpv6 => Traffic::Icmpv6,
        Protocol::Arp => Traffic::Arp,
        // Skipped by the parser: a packet has one protocol.
        Protocol::Any => anyhow::bail!("--protocol takes one protocol"),
    };
    let direction = if args.direction == "egress" {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let query = explain::Query {
        pod: args.pod.clone(),
        interface: args.interface.clone(),
        network: args.network.clone(),
        packet: Packet {
            direction,
            peer: args.peer,
            traffic,
        },
    };
    let out = explain::explain(&layout, &query)?;
    match args.output {
        ExplainOutput::Json => println!("{}", serde_json::to_string(&out)?),
        ExplainOutput::Text => print!("{}", explain::text(&out)),
    }
    if let Some(d) = &out.disagreement {
        anyhow::bail!("the installed policy and its record disagree: {d}");
    }
    Ok(())
}
