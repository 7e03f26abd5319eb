//! `multus-agent`: the node agent binary.
mod cli;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use multus_agent::dataplane::{AttachMode, AttachRequest, Dataplane, PinLayout, Policy};
use multus_cni::thick;

#[derive(Parser)]
#[command(
    name = "multus-agent",
    version = multus_cni::build_info::VERSION_LINE,
    about = "multus node agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the dataplane keeps its pins and records.
#[derive(clap::Args)]
struct DataplaneArgs {
    /// bpffs directory for pinned maps and links (`bpffsDir`).
    #[arg(long = "bpffs-dir", alias = "bpffs", default_value = thick::DEFAULT_BPFFS_DIR)]
    bpffs_dir: PathBuf,
    /// Directory for attachment records (tmpfs: it must not outlive the pins across a reboot;
    /// `dataplaneStateDir`).
    #[arg(long, default_value = thick::DEFAULT_DATAPLANE_STATE_DIR)]
    state_dir: PathBuf,
    /// Attach with TCX or clsact (default: TCX where the kernel has it).
    #[arg(long, value_parser = str::parse::<AttachMode>)]
    mode: Option<AttachMode>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: serve CNI requests on the socket, attach the dataplane, export metrics.
    Run(cli::RunArgs),
    /// List attachments with their pod, network, interface, policy and counters.
    Status(cli::StatusArgs),
    /// Show the last dropped packets of the running agent: pod, packet, reason and rule.
    Observe(cli::ObserveArgs),
    /// Say whether a pod's interface would pass or drop a packet, and which rule decides,
    /// from the installed policy (no packet is sent; works with the agent down).
    Explain(cli::ExplainArgs),
    /// Attach the TC programs to an interface inside a network namespace.
    Attach {
        #[command(flatten)]
        dataplane: DataplaneArgs,
        /// The namespace file (`/var/run/netns/NAME` or `/proc/PID/ns/net`).
        #[arg(long)]
        netns: PathBuf,
        /// The interface name inside the namespace.
        #[arg(long)]
        interface: String,
        /// A policy (JSON, see docs/dataplane.md) in force from the first packet.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Replace an attachment's policy in place.
    SetPolicy {
        #[command(flatten)]
        dataplane: DataplaneArgs,
        /// The attachment id.
        #[arg(long)]
        id: u32,
        /// The policy (JSON).
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove an attachment's policy (it keeps counting).
    ClearPolicy {
        #[command(flatten)]
        dataplane: DataplaneArgs,
        /// The attachment id.
        #[arg(long)]
        id: u32,
    },
    /// List the TCX programs on an interface, with their run-time statistics.
    Programs {
        /// The namespace file.
        #[arg(long)]
        netns: PathBuf,
        /// The interface name inside the namespace.
        #[arg(long)]
        interface: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set the drop event rate limit of every attachment (the agent sets it from
    /// `dropEventRate` and `dropEventBurst` when it starts).
    EventLimit {
        #[command(flatten)]
        dataplane: DataplaneArgs,
        /// Events per second and attachment (0: no events).
        #[arg(long)]
        rate: u32,
        /// Events an attachment may emit at once.
        #[arg(long, default_value_t = multus_agent::dataplane::events::DEFAULT_BURST)]
        burst: u32,
    },
    /// Remove attachments whose namespace or interface is gone.
    Gc {
        #[command(flatten)]
        dataplane: DataplaneArgs,
    },
    /// Detach one attachment, or all of them.
    Detach {
        #[command(flatten)]
        dataplane: DataplaneArgs,
        /// The attachment id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<u32>,
        /// Every attachment.
        #[arg(long)]
        all: bool,
    },
    /// Print every attachment with its counters.
    Counters {
        #[command(flatten)]
        dataplane: DataplaneArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Node install: copy multus-cni into the host's CNI bin directory, write the kubeconfig and
    /// 00-multus.conf(list) from the primary CNI configuration; with --watch, keep them current.
    Install(Box<multus_agent::install::cli::InstallArgs>),
    /// Take multus off this node and leave it working: remove 00-multus.conf(list), the shim
    /// and the kubeconfig the install wrote, detach every attachment and remove the pins.
    Uninstall(Box<multus_agent::uninstall::UninstallArgs>),
}

fn open(args: &DataplaneArgs) -> anyhow::Result<Dataplane> {
    let layout = PinLayout::new(&args.bpffs_dir, &args.state_dir);
    let (dataplane, adoption) =
        Dataplane::load(layout, args.mode.unwrap_or_else(AttachMode::detect))
            .context("loading the dataplane")?;
    for e in &adoption.errors {
        eprintln!("warning: {e}");
    }
    Ok(dataplane)
}

fn read_policy(path: &std::path::Path) -> anyhow::Result<Policy> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading policy {}", path.display()))?;
    // Strict: a field this form does not have (say the NAD annotation's `deny` or `antiSpoof`)
    // is an error naming it and where it is, never a policy quietly left open.
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        anyhow::anyhow!(
            "parsing policy {}: at {at}: {}",
            path.display(),
            e.into_inner()
        )
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Install(args) => multus_agent::install::cli::run(&args)?,
        Command::Uninstall(args) => multus_agent::uninstall::run_cli(&args)?,
        Command::Run(args) => cli::run(&args)?,
        Command::Status(args) => cli::status(&args)?,
        Command::Observe(args) => cli::observe(&args)?,
        Command::Explain(args) => cli::explain(&args)?,
        Command::Attach {
            dataplane,
            netns,
            interface,
            policy,
        } => {
            let policy = policy.as_deref().map(read_policy).transpose()?;
            let mut dp = open(&dataplane)?;
            let record = dp.attach(&AttachRequest {
                netns: &netns,
                ifname: &interface,
                owner: Default::default(),
                policy: policy.as_ref(),
                policy_source: None,
            })?;
            println!(
                "attached {} in {} as {} ({})",
                record.ifname,
                record.netns.display(),
                record.id,
                record.mode
            );
        }
        Command::SetPolicy {
            dataplane,
            id,
            file,
        } => {
            let policy = read_policy(&file)?;
            open(&dataplane)?.set_policy(id, &policy)?;
            println!("policy of {id} replaced");
        }
        Command::ClearPolicy { dataplane, id } => {
            open(&dataplane)?.clear_policy(id)?;
            println!("policy of {id} removed");
        }
        Command::Programs {
            netns,
            interface,
            json,
        } => {
            let programs = multus_agent::dataplane::tcx_programs(&netns, &interface)?;
            if json {
                println!("{}", serde_json::to_string(&programs)?);
            } else {
                println!(
                    "{:<8} {:<20} {:>8} {:>14} {:>12}",
                    "HOOK", "NAME", "ID", "RUN TIME NS", "RUNS"
                );
                for p in &programs {
                    println!(
                        "{:<8} {:<20} {:>8} {:>14} {:>12}",
                        p.hook, p.name, p.id, p.run_time_ns, p.run_count
                    );
                }
            }
        }
        Command::EventLimit {
            dataplane,
            rate,
            burst,
        } => {
            open(&dataplane)?
                .set_event_limit(multus_agent::dataplane::events::EventLimit { rate, burst })?;
            println!("drop events: {rate} per second, bursts of {burst}");
        }
        Command::Gc { dataplane } => {
            let report = open(&dataplane)?.gc();
            for id in &report.removed {
                println!("removed {id}");
            }
            for e in &report.errors {
                eprintln!("warning: {e}");
            }
        }
        Command::Detach { dataplane, id, all } => {
            let mut dp = open(&dataplane)?;
            let ids = if all {
                dp.attachments()?.into_iter().map(|r| r.id).collect()
            } else {
                id.into_iter().collect::<Vec<_>>()
            };
            // Every one is tried: one stuck attachment must not keep the others attached.
            let mut failed = Vec::new();
            let total = ids.len();
            for id in ids {
                match dp.detach(id) {
                    Ok(()) => println!("detached {id}"),
                    Err(e) => {
                        eprintln!("error: detaching {id}: {e}");
                        failed.push(id);
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} of {total} attachments could not be detached: {failed:?}",
                    failed.len()
                );
            }
        }
        Command::Counters { dataplane, json } => {
            let dp = open(&dataplane)?;
            let mut rows = Vec::new();
            for record in dp.attachments()? {
                let counters = dp.counters(record.id)?;
                rows.push((record, counters));
            }
            if json {
                let out: Vec<_> = rows
                    .iter()
                    .map(|(r, c)| serde_json::json!({ "attachment": r, "counters": c }))
                    .collect();
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!(
                    "{:>4}  {:<10} {:<28} {:>10} {:>12} {:>8} {:>10} {:>12} {:>8}",
                    "ID",
                    "INTERFACE",
                    "NETNS",
                    "RX PKTS",
                    "RX BYTES",
                    "RX DROP",
                    "TX PKTS",
                    "TX BYTES",
                    "TX DROP"
                );
                for (r, c) in &rows {
                    println!(
                        "{:>4}  {:<10} {:<28} {:>10} {:>12} {:>8} {:>10} {:>12} {:>8}",
                        r.id,
                        r.ifname,
                        r.netns.display(),
                        c.ingress.packets,
                        c.ingress.bytes,
                        c.ingress.dropped(),
                        c.egress.packets,
                        c.egress.bytes,
                        c.egress.dropped()
                    );
                }
            }
        }
    }
    Ok(())
}
