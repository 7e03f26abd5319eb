//! `cargo xtask bench dataplane`: two pods on one macvlan segment, traffic from the client to the
//! server measured with iperf3, in six set-ups on the server's interface, side by side:
//!
//! 1. no program (the baseline);
//! 2. empty programs of the bench's own on both TCX hooks (what having a program there costs at
//!    all, whatever it does);
//! 3. the TC programs without a policy (counting only);
//! 4. no program again, measured like any set-up (an A/A check: its ratio to the baseline is the
//!    bench's own noise);
//! 5. the TC programs with a policy of N CIDR rules (default deny in, N denied CIDRs scattered
//!    over the IPv4 space, and an allow for the client's subnet on the iperf3 port);
//! 6. iptables with the same rules in the server pod's namespace (the MultiNetworkPolicy-iptables
//!    approach): N DROP rules, then the ACCEPTs, policy DROP.
//!
//! Each round measures TCP throughput and the receive rate of 64-byte UDP datagrams in every
//! set-up, starting with another set-up each round. iperf3's client and server are pinned to two
//! different CPUs (when the bench may use two): left to the scheduler, they share a CPU in some
//! runs and not in others, and the 64-byte UDP rate jumps by a fifth between the two. Each
//! set-up gets two seconds to settle before its runs, and the runs leave out their first second
//! (TCP's slow start). The medians over the rounds are printed, and each
//! set-up's ratio to the baseline is the median of the rounds' ratios (each round's baseline run
//! lies within minutes of the set-up's, so a machine slowing down or speeding up between rounds
//! cancels out), with the lowest and highest round. Then, with
//! `kernel.bpf_stats_enabled=1`, one more pass reads the programs' mean run time per packet from
//! the kernel's statistics: the ingress program's over a 64-byte UDP run to the server, the egress
//! program's over one from the server (`iperf3 -R`), so that each mean is over hundreds of
//! thousands of small packets and a few scheduling hiccups of the machine do not dominate it.
//! (Throughput runs keep the statistics off: they cost two clock reads per packet.) Last, the
//! same programs and policy on the loopback of a probe namespace run one 64-byte UDP frame a
//! million times through `BPF_PROG_TEST_RUN` (bpftool): the cost on a warm cache, without the
//! statistics' clock reads, for comparison.
use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use multus_testkit::{BpffsDir, MacvlanPods, Netns, inside, raw_bpf, traffic::Udp4};
use serde_json::{Value, json};

use crate::shell::{Cmd, build_agent, is_root, note, step};

/// The port iperf3 listens on in the server pod.
const PORT: u16 = 5201;
/// The pause between setting a set-up up and measuring it.
const SETTLE: Duration = Duration::from_secs(2);
/// UDP payload size of the small-packet run.
const UDP_PAYLOAD: u64 = 64;
/// The targets with the rules in: TCP throughput and the 64-byte UDP rate against no program,
/// and the run time per packet as the kernel's statistics measure it (their own clock reads
/// included, so the program's own time is less).
const TCP_TARGET: f64 = 1.00;
const UDP_TARGET: f64 = 0.95;
const RUN_TIME_TARGET_NS: f64 = 100.0;
/// The agent's default drop event limit (`dropEventRate`, `dropEventBurst`).
const DEFAULT_EVENT_RATE: u32 = 100;
const DEFAULT_EVENT_BURST: u32 = 200;

/// Options of `cargo xtask bench dataplane`.
#[derive(clap::Args)]
pub struct Args {
    /// CIDR rules in the filtered set-ups.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Rounds over all set-ups (medians are reported; with fewer than five, one slow round on
    /// a shared machine moves the 64-byte UDP median by several percent).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Baseline,
    /// No program again, as a set-up of its own: its ratio to the baseline is what the bench
    /// cannot tell from noise.
    BaselineAgain,
    EmptyPrograms,
    Program,
    ProgramRules,
    Iptables,
}

impl Scenario {
    const ALL: [Self; 6] = [
        Self::Baseline,
        Self::EmptyPrograms,
        Self::Program,
        Self::BaselineAgain,
        Self::ProgramRules,
        Self::Iptables,
    ];

    /// Where the set-up's figures are kept.
    fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    fn label(self, rules: usize) -> String {
        match self {
            Self::Baseline => "no program".to_owned(),
            Self::BaselineAgain => "no program, again (A/A)".to_owned(),
            Self::EmptyPrograms => "empty programs (hooks only)".to_owned(),
            Self::Program => "program, no policy".to_owned(),
            Self::ProgramRules => format!("program, {rules} CIDR rules"),
            Self::Iptables => format!("iptables, {rules} rules"),
        }
    }
}

/// Runs the bench.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the bench creates network namespaces and loads eBPF programs: run it as root");
    }
    if args.rounds == 0 || args.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    let bin = build_agent()?;

    step("two pods on a macvlan segment; the server's interface is the one under test");
    let net = MacvlanPods::new(2);
    let (client, server) = (&net.pods[0], &net.pods[1]);
    note(&format!(
        "client {} -> server {}:{PORT}",
        client.ip4, server.ip4
    ));
    let work = tempfile::tempdir().context("creating a work directory")?;
    let bpffs = BpffsDir::new("bench");
    let agent = Agent {
        bin,
        bpffs: bpffs.path().to_owned(),
        state: work.path().join("state"),
    };
    let cidrs = scattered_cidrs(args.rules);
    let policy = work.path().join("policy.json");
    fs::write(&policy, policy_json(&cidrs, client.ip4).to_string())
        .with_context(|| format!("writing {}", policy.display()))?;
    let iptables = work.path().join("iptables.rules");
    fs::write(&iptables, iptables_rules(&cidrs, client.ip4))
        .with_context(|| format!("writing {}", iptables.display()))?;
    note(&format!(
        "{} CIDRs from /16 to /32, scattered over the IPv4 space; iptables: {}",
        cidrs.len(),
        iptables_version()
    ));
    let _iperf = IperfServer::start(&server.netns)?;
    let affinity = two_cpus()?.map(|(c, s)| format!("{c},{s}"));
    match &affinity {
        Some(a) => note(&format!("iperf3 client and server pinned to CPUs {a}")),
        None => note("one CPU only: iperf3 client and server not pinned (ratios are noisier)"),
    }
    let target = Target {
        client: &client.netns,
        server: &server.netns,
        ifname: &server.ifname,
        server_ip: server.ip4,
        seconds: args.seconds,
        affinity,
    };
    let setups = SetupFiles {
        agent: &agent,
        policy: &policy,
        iptables: &iptables,
    };

    let mut tcp: Vec<Vec<f64>> = vec![Vec::new(); Scenario::ALL.len()];
    let mut udp: Vec<Vec<f64>> = vec![Vec::new(); Scenario::ALL.len()];
    for round in 1..=args.rounds {
        step(&format!("round {round}/{}", args.rounds));
        // Each round starts with another set-up, so none always runs right after the same one.
        let n = Scenario::ALL.len();
        for i in (0..n).map(|k| (k + round - 1) % n) {
            let scenario = Scenario::ALL[i];
            let started = Instant::now();
            let _setup = setups.apply(scenario, &target)?;
            let set_up = started.elapsed();
            // What the previous set-up's removal and this one's loading left for the kernel to
            // do (freeing 10,000 iptables rules takes a while) must not fall into a measurement.
            std::thread::sleep(SETTLE);
            tcp[i].push(target.tcp_gbps()?);
            udp[i].push(target.udp_kpps(false)?);
            note(&format!(
                "{:<28} TCP {:>7.2} Gbit/s  UDP {:>8.1} kpps  (set up in {:.0?})",
                scenario.label(args.rules),
                tcp[i].last().copied().unwrap_or_default(),
                udp[i].last().copied().unwrap_or_default(),
                set_up
            ));
        }
    }

    step("program run time per packet (kernel.bpf_stats_enabled=1)");
    let mut run_times = Vec::new();
    {
        let _stats = BpfStats::enable()?;
        for scenario in [Scenario::Program, Scenario::ProgramRules] {
            let _setup = setups.apply(scenario, &target)?;
            let start = agent.programs(target.server, target.ifname)?;
            target.udp_kpps(false)?;
            let forward = agent.programs(target.server, target.ifname)?;
            target.udp_kpps(true)?;
            let reverse = agent.programs(target.server, target.ifname)?;
            let ingress = per_packet(&start, &forward, "ingress");
            let egress = per_packet(&forward, &reverse, "egress");
            let started = Instant::now();
            target.tcp_gbps()?;
            let elapsed = started.elapsed();
            let after_tcp = agent.programs(target.server, target.ifname)?;
            let tcp = tcp_share(&reverse, &after_tcp, elapsed);
            note(&format!(
                "{:<28} ingress {}  egress {}",
                scenario.label(args.rules),
                describe(ingress),
                describe(egress)
            ));
            note(&format!(
                "{:<28} under TCP: {:.0} packets/s through both hooks, {:.0} ns/packet, {:.2}% of \
                 one CPU",
                "",
                tcp.packets_per_second,
                tcp.ns_per_packet,
                100.0 * tcp.cpu_share
            ));
            run_times.push(RunTime {
                scenario,
                ingress,
                egress,
                tcp,
            });
        }
    }
    step("program run time on a warm cache (BPF_PROG_TEST_RUN, 10^6 runs of one frame)");
    let mut warm = Vec::new();
    for scenario in [Scenario::Program, Scenario::ProgramRules] {
        let policy = (scenario == Scenario::ProgramRules).then_some(policy.as_path());
        let times = warm_run_times(&agent, policy, client.ip4, server.ip4, work.path())?;
        note(&format!(
            "{:<28} ingress {:.0} ns  egress {:.0} ns",
            scenario.label(args.rules),
            times.0,
            times.1
        ));
        warm.push((scenario, times));
    }

    step(&format!(
        "pass and drop paths with drop events, {} CIDR rules (BPF_PROG_TEST_RUN, ingress)",
        args.rules
    ));
    let denied = cidrs
        .first()
        .map_or(Ipv4Addr::new(10, 0, 0, 1), |(a, _)| *a);
    let paths = drop_path_times(&agent, &policy, denied, client.ip4, server.ip4, work.path())?;
    for (label, ns) in &paths {
        note(&format!("{label:<40} {ns:.0} ns"));
    }

    print_report(args, &tcp, &udp, &run_times, &warm);
    print_paths(&paths);
    Ok(())
}

/// Where the traffic goes.
struct Target<'a> {
    client: &'a Netns,
    server: &'a Netns,
    ifname: &'a str,
    server_ip: Ipv4Addr,
    seconds: u32,
    /// `-A client,server` for iperf3, when the bench may run on two CPUs.
    affinity: Option<String>,
}

impl Target<'_> {
    fn iperf(&self, extra: &[&str]) -> anyhow::Result<Value> {
        let seconds = self.seconds.to_string();
        let limit = (self.seconds + 21).to_string();
        let server = self.server_ip.to_string();
        let port = PORT.to_string();
        let mut args = vec![
            limit.as_str(),
            "iperf3",
            "-c",
            &server,
            "-p",
            &port,
            "-t",
            &seconds,
            "-J",
        ];
        if let Some(affinity) = &self.affinity {
            args.extend(["-A", affinity.as_str()]);
        }
        args.extend_from_slice(extra);
        let out = self.client.exec("timeout", &args)?;
        serde_json::from_str(&out).context("parsing iperf3 JSON")
    }

    /// TCP throughput received by the server, Gbit/s.
    fn tcp_gbps(&self) -> anyhow::Result<f64> {
        // Slow start stays out of the figure (the run lasts a second more).
        let report = self.iperf(&["-O", "1"])?;
        number(&report, &["end", "sum_received", "bits_per_second"]).map(|b| b / 1e9)
    }

    /// 64-byte UDP datagrams received per second, in thousands: by the server, or with
    /// `reverse` by the client (the server sends).
    fn udp_kpps(&self, reverse: bool) -> anyhow::Result<f64> {
        let len = UDP_PAYLOAD.to_string();
        // The first second warms up, as for TCP.
        let mut args = vec!["-u", "-b", "0", "-l", &len, "-O", "1"];
        if reverse {
            args.push("-R");
        }
        let report = self.iperf(&args)?;
        let bytes = number(&report, &["end", "sum_received", "bytes"])?;
        let seconds = number(&report, &["end", "sum_received", "seconds"])?;
        Ok(bytes / UDP_PAYLOAD as f64 / seconds / 1e3)
    }
}

fn number(v: &Value, path: &[&str]) -> anyhow::Result<f64> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .with_context(|| format!("iperf3 JSON has no {}", path.join(".")))
}

/// The files the set-ups use.
struct SetupFiles<'a> {
    agent: &'a Agent,
    policy: &'a Path,
    iptables: &'a Path,
}

impl SetupFiles<'_> {
    fn apply<'t>(&self, scenario: Scenario, target: &'t Target<'t>) -> anyhow::Result<Setup<'t>>
    where
        Self: 't,
    {
        match scenario {
            Scenario::Baseline | Scenario::BaselineAgain => Ok(Setup::Nothing),
            Scenario::EmptyPrograms => {
                let links = inside::run_in(&target.server.path(), || -> anyhow::Result<_> {
                    let ifindex = nix::net::if_::if_nametoindex(target.ifname)
                        .with_context(|| format!("no interface {}", target.ifname))?;
                    let mut links = Vec::new();
                    for ingress in [true, false] {
                        let program = raw_bpf::load_program(raw_bpf::TC_ACT_UNSPEC)
                            .context("loading an empty TC program")?;
                        links.push(
                            raw_bpf::tcx_link(&program, ifindex, ingress)
                                .context("linking an empty TC program")?,
                        );
                    }
                    Ok(links)
                })
                .context("entering the server's namespace")??;
                Ok(Setup::Links(links))
            }
            Scenario::Program | Scenario::ProgramRules => {
                let policy = (scenario == Scenario::ProgramRules).then_some(self.policy);
                let id = self.agent.attach(target.server, target.ifname, policy)?;
                Ok(Setup::Attached(self.agent.clone(), id))
            }
            Scenario::Iptables => {
                let file = self.iptables.to_string_lossy().into_owned();
                target
                    .server
                    .exec("sh", &["-c", &format!("iptables-restore < {file}")])?;
                Ok(Setup::Iptables(target.server))
            }
        }
    }
}

/// What a set-up changed; undone on drop.
enum Setup<'a> {
    Nothing,
    /// Links of programs of the bench's own; closing them detaches the programs.
    Links(Vec<OwnedFd>),
    Attached(Agent, u32),
    Iptables(&'a Netns),
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        let result = match self {
            Self::Nothing => Ok(()),
            Self::Links(links) => {
                // Closing the links detaches the programs.
                links.clear();
                Ok(())
            }
            Self::Attached(agent, id) => agent.detach(*id),
            Self::Iptables(netns) => netns
                .exec("iptables", &["-P", "INPUT", "ACCEPT"])
                .and_then(|_| netns.exec("iptables", &["-F", "INPUT"]))
                .map(drop)
                .map_err(Into::into),
        };
        if let Err(e) = result {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// The `multus-agent` binary with the bench's pin and state directories.
#[derive(Clone)]
struct Agent {
    bin: PathBuf,
    bpffs: PathBuf,
    state: PathBuf,
}

impl Agent {
    fn run(&self, args: &[&str], dataplane: bool) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        if dataplane {
            cmd.arg("--bpffs-dir")
                .arg(&self.bpffs)
                .arg("--state-dir")
                .arg(&self.state);
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!("multus-agent {} failed: {}", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn attach(&self, netns: &Netns, ifname: &str, policy: Option<&Path>) -> anyhow::Result<u32> {
        let netns = netns.path().to_string_lossy().into_owned();
        let mut args = vec!["attach", "--netns", &netns, "--interface", ifname];
        let policy = policy.map(|p| p.to_string_lossy().into_owned());
        if let Some(policy) = &policy {
            args.extend(["--policy", policy.as_str()]);
        }
        let out = self.run(&args, true)?;
        // "attached net1 in /var/run/netns/x as 3 (tcx)"
        out.split_whitespace()
            .skip_while(|w| *w != "as")
            .nth(1)
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("no attachment id in {out:?}"))
    }

    fn detach(&self, id: u32) -> anyhow::Result<()> {
        self.run(&["detach", "--id", &id.to_string()], true)
            .map(drop)
    }

    /// `(hook, run time ns, run count)` of the programs on the target interface.
    fn programs(&self, netns: &Netns, ifname: &str) -> anyhow::Result<Vec<Program>> {
        let netns = netns.path().to_string_lossy().into_owned();
        let args = [
            "programs",
            "--netns",
            &netns,
            "--interface",
            ifname,
            "--json",
        ];
        let out = self.run(&args, false)?;
        let list: Vec<Value> = serde_json::from_str(&out).context("parsing programs JSON")?;
        list.iter()
            .map(|p| {
                let field = |k: &str| p.get(k).and_then(Value::as_u64);
                Some(Program {
                    hook: p.get("hook")?.as_str()?.to_owned(),
                    id: field("id")?,
                    run_time_ns: field("run_time_ns")?,
                    run_count: field("run_count")?,
                })
            })
            .collect::<Option<_>>()
            .context("unexpected programs JSON")
    }
}

fn describe(v: Option<(f64, u64)>) -> String {
    v.map_or_else(
        || "no runs".to_owned(),
        |(ns, runs)| format!("{ns:.0} ns/packet over {runs} runs"),
    )
}

/// One program on an interface, as `multus-agent programs` reports it.
struct Program {
    hook: String,
    id: u64,
    run_time_ns: u64,
    run_count: u64,
}

/// What the programs cost during a TCP run: both hooks' packets and run time over the run's
/// wall-clock time (iperf3's start and end included, so the share is if anything low by a few
/// percent of itself).
struct TcpCost {
    packets_per_second: f64,
    ns_per_packet: f64,
    /// Run time over wall-clock time: the share of one CPU the programs took.
    cpu_share: f64,
}

fn tcp_share(before: &[Program], after: &[Program], elapsed: Duration) -> TcpCost {
    let total = |list: &[Program]| {
        list.iter().fold((0u64, 0u64), |(t, n), p| {
            (t + p.run_time_ns, n + p.run_count)
        })
    };
    let ((t0, n0), (t1, n1)) = (total(before), total(after));
    let (ns, runs) = (t1.saturating_sub(t0) as f64, n1.saturating_sub(n0) as f64);
    let wall = elapsed.as_secs_f64();
    TcpCost {
        packets_per_second: runs / wall,
        ns_per_packet: if runs > 0.0 { ns / runs } else { f64::NAN },
        cpu_share: ns / (wall * 1e9),
    }
}

/// Mean run time per packet of the program on `hook` between two snapshots.
fn per_packet(before: &[Program], after: &[Program], hook: &str) -> Option<(f64, u64)> {
    let find = |list: &[Program]| {
        list.iter()
            .find(|p| p.hook == hook)
            .map(|p| (p.run_time_ns, p.run_count))
    };
    let (t0, n0) = find(before)?;
    let (t1, n1) = find(after)?;
    let runs = n1.checked_sub(n0)?;
    (runs > 0).then(|| (t1.saturating_sub(t0) as f64 / runs as f64, runs))
}

/// Mean run time per packet of the ingress and egress programs through `BPF_PROG_TEST_RUN`: they
/// are attached (with `policy`) to the loopback of a probe namespace, whose device is what a test
/// run's packets come from, and each runs a 64-byte UDP frame of the bench's flow a million times
/// (towards the server on ingress, from it on egress).
fn warm_run_times(
    agent: &Agent,
    policy: Option<&Path>,
    client: Ipv4Addr,
    server: Ipv4Addr,
    dir: &Path,
) -> anyhow::Result<(f64, f64)> {
    let probe = Netns::new("bpr");
    let id = agent.attach(&probe, "lo", policy)?;
    let _detach = Setup::Attached(agent.clone(), id);
    let programs = agent.programs(&probe, "lo")?;
    let to_server = Udp4 {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: client,
        dst: server,
        sport: 40_000,
        dport: PORT,
    };
    let from_server = Udp4 {
        src_mac: to_server.dst_mac,
        dst_mac: to_server.src_mac,
        src: server,
        dst: client,
        sport: PORT,
        dport: 40_000,
    };
    let payload = [0x5a; UDP_PAYLOAD as usize];
    let mut out = [0.0; 2];
    for (slot, hook, frame) in [(0, "ingress", to_server), (1, "egress", from_server)] {
        let prog = program(&programs, hook)?;
        let file = dir.join(format!("{hook}.frame"));
        out[slot] = test_run(&probe, prog.id, &frame.frame(&payload), &file, 1_000_000)?;
    }
    Ok((out[0], out[1]))
}

/// The program on `hook` among `programs`.
fn program<'a>(programs: &'a [Program], hook: &str) -> anyhow::Result<&'a Program> {
    programs
        .iter()
        .find(|p| p.hook == hook)
        .with_context(|| format!("no {hook} program on the probe's loopback"))
}

/// Mean run time of program `prog` (its id) over `repeat` runs of `frame` (`BPF_PROG_TEST_RUN` through bpftool,
/// inside `probe`), written to `file` first.
fn test_run(
    probe: &Netns,
    prog: u64,
    frame: &[u8],
    file: &Path,
    repeat: u32,
) -> anyhow::Result<f64> {
    fs::write(file, frame).with_context(|| format!("writing {}", file.display()))?;
    let (id, file) = (prog.to_string(), file.to_string_lossy().into_owned());
    let repeat = repeat.to_string();
    let report = probe.exec(
        "bpftool",
        &[
            "prog", "run", "id", &id, "data_in", &file, "repeat", &repeat,
        ],
    )?;
    report
        .split("duration (average):")
        .nth(1)
        .and_then(|rest| {
            rest.trim()
                .strip_suffix("ns")
                .or_else(|| rest.split("ns").next())
        })
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no duration in bpftool's report: {report}"))
}

/// One line of the drop-path comparison: what ran and its mean ns per packet.
type PathTimes = Vec<(String, f64)>;

/// The ingress program under the rules policy on a probe loopback, through `BPF_PROG_TEST_RUN`:
/// the pass path (a frame the policy allows) and the drop path (a frame from a denied CIDR),
/// with drop events off, on under the default rate limit, and on for every drop. The last runs
/// 10^4 times only, which the 1 MiB ring holds without a reader: each run pays for a whole
/// event. Pass-path runs with events off and on bracket the drop runs, the baseline of the
/// same run.
fn drop_path_times(
    agent: &Agent,
    policy: &Path,
    denied: Ipv4Addr,
    client: Ipv4Addr,
    server: Ipv4Addr,
    dir: &Path,
) -> anyhow::Result<PathTimes> {
    let probe = Netns::new("bpd");
    let id = agent.attach(&probe, "lo", Some(policy))?;
    let _detach = Setup::Attached(agent.clone(), id);
    let frame = |src| {
        Udp4 {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src,
            dst: server,
            sport: 40_000,
            dport: PORT,
        }
        .frame(&[0x5a; UDP_PAYLOAD as usize])
    };
    let (pass, dropped) = (frame(client), frame(denied));
    let file = dir.join("drop-path.frame");
    // Every `multus-agent` call on the dataplane loads the programs anew and swaps them into
    // the pinned links: the ingress program is looked up again after each.
    let limit = |rate: u32, burst: u32| -> anyhow::Result<u64> {
        let (rate, burst) = (rate.to_string(), burst.to_string());
        agent.run(&["event-limit", "--rate", &rate, "--burst", &burst], true)?;
        let programs = agent.programs(&probe, "lo")?;
        Ok(program(&programs, "ingress")?.id)
    };
    let mut out = Vec::new();
    let prog = limit(0, 0)?;
    out.push((
        "pass, events off".to_owned(),
        test_run(&probe, prog, &pass, &file, 1_000_000)?,
    ));
    out.push((
        "drop, events off".to_owned(),
        test_run(&probe, prog, &dropped, &file, 1_000_000)?,
    ));
    let prog = limit(1_000_000_000, 1_000_000)?;
    out.push((
        "drop, an event per drop (10^4 runs)".to_owned(),
        test_run(&probe, prog, &dropped, &file, 10_000)?,
    ));
    let prog = limit(DEFAULT_EVENT_RATE, DEFAULT_EVENT_BURST)?;
    out.push((
        format!("drop, events on ({DEFAULT_EVENT_RATE}/s, burst {DEFAULT_EVENT_BURST})"),
        test_run(&probe, prog, &dropped, &file, 1_000_000)?,
    ));
    out.push((
        format!("pass, events on ({DEFAULT_EVENT_RATE}/s, burst {DEFAULT_EVENT_BURST})"),
        test_run(&probe, prog, &pass, &file, 1_000_000)?,
    ));
    limit(0, 0)?;
    Ok(out)
}

/// The first two CPUs this process may run on, for iperf3's client and server.
fn two_cpus() -> anyhow::Result<Option<(usize, usize)>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .context("reading the CPU affinity")?;
    let mut cpus = (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    Ok(cpus.next().zip(cpus.next()))
}

/// An iperf3 server in the server pod, killed on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(netns: &Netns) -> anyhow::Result<Self> {
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name(), "iperf3", "-s", "-p"])
            .arg(PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        // Give it a moment to listen.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self(child))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kernel.bpf_stats_enabled` on for as long as this lives; restored on drop.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let before =
            fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self(before.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.0) {
            eprintln!("cleanup: restoring {BPF_STATS}: {e}");
        }
    }
}

/// `n` distinct CIDRs of lengths /16 to /32, spread over the unicast IPv4 space by a fixed
/// generator (the same set every run), none of them near the pods' documentation subnet.
fn scattered_cidrs(n: usize) -> Vec<(Ipv4Addr, u8)> {
    const LENGTHS: [u8; 5] = [16, 20, 24, 28, 32];
    let mut state: u64 = 0x5eed_0fd4_7491_a7c3;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let raw = next();
        let len = LENGTHS[out.len() % LENGTHS.len()];
        let addr = (raw as u32) & (u32::MAX << (32 - u32::from(len)));
        let first = addr >> 24;
        // Unicast only, and far from 192.0.0.0/8 where the pods live.
        if first == 0 || first == 127 || first == 192 || first >= 224 {
            continue;
        }
        if seen.insert((addr, len)) {
            out.push((Ipv4Addr::from(addr), len));
        }
    }
    out
}

/// The policy of the filtered program set-up, in the agent's JSON format.
fn policy_json(cidrs: &[(Ipv4Addr, u8)], client: Ipv4Addr) -> Value {
    let mut rules: Vec<Value> = cidrs
        .iter()
        .map(|(a, l)| json!({ "action": "deny", "peers": [{ "cidr": format!("{a}/{l}") }] }))
        .collect();
    let port = json!({ "start": PORT, "end": PORT });
    rules.push(json!({
        "action": "allow",
        "peers": [{ "cidr": format!("{}/24", subnet(client)) }],
        "ports": [{ "protocol": "tcp", "ports": port }, { "protocol": "udp", "ports": port }],
    }));
    json!({ "ingress": { "default": "deny", "rules": rules } })
}

/// The same rules for iptables-restore: every deny first (iptables stops at the first match,
/// our programs let deny win regardless of order), then the allows, policy DROP.
fn iptables_rules(cidrs: &[(Ipv4Addr, u8)], client: Ipv4Addr) -> String {
    let mut out =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for (a, l) in cidrs {
        let _ = writeln!(out, "-A INPUT -s {a}/{l} -j DROP");
    }
    let net = subnet(client);
    for proto in ["tcp", "udp"] {
        let _ = writeln!(
            out,
            "-A INPUT -s {net}/24 -p {proto} --dport {PORT} -j ACCEPT"
        );
    }
    out.push_str("COMMIT\n");
    out
}

fn subnet(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & 0xffff_ff00)
}

fn iptables_version() -> String {
    Cmd::new("iptables")
        .args(["-V"])
        .probe()
        .map_or_else(|| "version unknown".to_owned(), |v| v.trim().to_owned())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A set-up's ratio to the baseline over the rounds.
struct Ratio {
    median: f64,
    low: f64,
    high: f64,
}

impl Ratio {
    fn spread(&self) -> String {
        format!("{:.0}-{:.0}%", 100.0 * self.low, 100.0 * self.high)
    }
}

/// The ratios of `values` to `base`, round by round (both in round order).
fn paired(values: &[f64], base: &[f64]) -> Ratio {
    let ratios: Vec<f64> = values.iter().zip(base).map(|(v, b)| v / b).collect();
    Ratio {
        median: median(&ratios),
        low: ratios.iter().copied().fold(f64::NAN, f64::min),
        high: ratios.iter().copied().fold(f64::NAN, f64::max),
    }
}

/// A set-up's run times from the kernel's statistics.
struct RunTime {
    scenario: Scenario,
    ingress: Option<(f64, u64)>,
    egress: Option<(f64, u64)>,
    tcp: TcpCost,
}

type RunTimes = Vec<RunTime>;
type WarmTimes = Vec<(Scenario, (f64, f64))>;

fn print_report(
    args: &Args,
    tcp: &[Vec<f64>],
    udp: &[Vec<f64>],
    run_times: &RunTimes,
    warm: &WarmTimes,
) {
    step(&format!(
        "results: medians of {} round(s) of {} s runs, server side filtered",
        args.rounds, args.seconds
    ));
    let ns = |v: Option<(f64, u64)>| v.map_or_else(|| "-".to_owned(), |(ns, _)| format!("{ns:.0}"));
    println!(
        "{:<28} {:>10} {:>7} {:>9} {:>12} {:>7} {:>9} {:>10} {:>9} {:>8} {:>8}",
        "set-up",
        "TCP Gbit/s",
        "vs base",
        "rounds",
        "UDP 64B kpps",
        "vs base",
        "rounds",
        "ingress ns",
        "egress ns",
        "warm in",
        "warm out"
    );
    for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
        let (t, u) = (paired(&tcp[i], &tcp[0]), paired(&udp[i], &udp[0]));
        let times = run_times.iter().find(|r| r.scenario == scenario);
        let warm = warm.iter().find(|(s, _)| *s == scenario).map(|(_, w)| *w);
        let warm_ns = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"));
        println!(
            "{:<28} {:>10.2} {:>6.0}% {:>9} {:>12.1} {:>6.0}% {:>9} {:>10} {:>9} {:>8} {:>8}",
            scenario.label(args.rules),
            median(&tcp[i]),
            100.0 * t.median,
            t.spread(),
            median(&udp[i]),
            100.0 * u.median,
            u.spread(),
            times.map_or_else(|| "-".to_owned(), |r| ns(r.ingress)),
            times.map_or_else(|| "-".to_owned(), |r| ns(r.egress)),
            warm_ns(warm.map(|w| w.0)),
            warm_ns(warm.map(|w| w.1)),
        );
    }
    let filtered = Scenario::ProgramRules.index();
    let ratio = paired(&tcp[filtered], &tcp[0]).median;
    let udp_ratio = paired(&udp[filtered], &udp[0]).median;
    let rules_times = run_times
        .iter()
        .find(|r| r.scenario == Scenario::ProgramRules);
    let worst_ns = rules_times
        .into_iter()
        .flat_map(|r| [r.ingress, r.egress])
        .filter_map(|v| v.map(|(ns, _)| ns))
        .fold(f64::NAN, f64::max);
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "targets with {} rules: TCP >= {:.0}% of baseline: {} ({:.0}%); 64-byte UDP >= {:.0}%: {} \
         ({:.0}%); run time <= {RUN_TIME_TARGET_NS:.0} ns/packet: {} ({worst_ns:.0} ns, slower hook)",
        args.rules,
        TCP_TARGET * 100.0,
        verdict(ratio >= TCP_TARGET),
        ratio * 100.0,
        UDP_TARGET * 100.0,
        verdict(udp_ratio >= UDP_TARGET),
        udp_ratio * 100.0,
        verdict(worst_ns <= RUN_TIME_TARGET_NS),
    );
    if let Some(r) = rules_times {
        let again = paired(&tcp[Scenario::BaselineAgain.index()], &tcp[0]);
        println!(
            "TCP cost bound with {} rules: the programs ran {:.0} packets/s at {:.0} ns, {:.2}% of \
             one CPU, the most their work can take from TCP throughput; the bench's own noise \
             (A/A): {:.0}% median, rounds {}",
            args.rules,
            r.tcp.packets_per_second,
            r.tcp.ns_per_packet,
            100.0 * r.tcp.cpu_share,
            100.0 * again.median,
            again.spread()
        );
    }
    println!(
        "vs base: median over the rounds of the set-up's figure over the baseline's in the same \
         round; rounds: the lowest and highest of those ratios"
    );
    println!(
        "ingress/egress ns: kernel BPF statistics (kernel.bpf_stats_enabled), ingress over 64-byte UDP \
         to the server, egress over 64-byte UDP from it; they include the statistics' own clock \
         reads. warm: BPF_PROG_TEST_RUN of one frame, including the test harness's loop"
    );
}

/// The drop-path comparison, with each line's cost against the pass path with events off.
fn print_paths(paths: &PathTimes) {
    let base = paths.first().map_or(f64::NAN, |(_, ns)| *ns);
    println!(
        "{:<40} {:>8} {:>8}",
        "ingress, warm (BPF_PROG_TEST_RUN)", "ns", "vs pass"
    );
    for (label, ns) in paths {
        println!("{label:<40} {ns:>8.0} {:>+8.0}", ns - base);
    }
    println!(
        "the drop path includes the connection table's reply lookup and the drop counters; an \
         event per drop adds the ring buffer's reserve and submit"
    );
}
