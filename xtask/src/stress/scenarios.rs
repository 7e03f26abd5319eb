//! The stress steps of one mode, on one node.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use multus_testkit::{Netns, conf::PLUGIN_DIR, inside};
use serde_json::{Value, json};

use super::{
    Args, Tally,
    node::{self, NETWORKS, Outcome, StressChecks as _, StressNode, node_links},
    pods::Pods,
};
use crate::{
    bench_cni::{ms, percentile},
    shell::{note, step},
};

/// Over the second half of the cycles the agent's RSS may grow by at most this much per cycle,
/// on a least-squares fit (the local source's leak was about 1 KiB per new pod file)...
const MAX_SLOPE_KIB_PER_CYCLE: f64 = 0.1;
/// ... or by at most this much in all (RSS moves in 4 KiB pages and the allocator keeps some:
/// a short run's slope is page noise).
const MAX_GROWTH_KIB: f64 = 192.0;
/// Fewer cycles than this are still the agent's warm-up (caches, allocator arenas, the
/// Kubernetes client's pools: several KiB per cycle over the first hundred): the trend is
/// printed, not judged.
const MIN_CYCLES_FOR_PLATEAU: usize = 500;
/// How long the node may take to be clean after a step (the agent's sweep gives a killed
/// writer's temp file a few seconds, and runs every second).
const CLEAN_WITHIN: Duration = Duration::from_secs(20);

/// A pod of a burst: its netns and name.
struct BurstPod {
    netns: Netns,
    name: String,
    id: String,
}

/// Runs every step of one mode on a fresh node.
pub fn run_mode(mode: &str, pods: &dyn Pods, args: &Args, tally: &mut Tally) -> anyhow::Result<()> {
    step(&format!("{mode}: node, agent, networks"));
    let bin = crate::shell::target_dir(if args.debug { "debug" } else { "release" });
    let mut node = node::new(bin, &mode[..4])?;
    pods.prepare(&mut node)?;
    node.start_agent()?;
    // One warm-up pod creates the bridge; from then on the node's links are its own.
    let warm = Netns::new("spw");
    pods.create(&node, "warmup", NETWORKS)?;
    let add = node.cni(
        &node.shim_conf(),
        "ADD",
        "warmup",
        &warm.path(),
        pods.namespace(),
        "warmup",
    )?;
    tally.check("warm-up ADD", add.exit == 0, || format!("{add:?}"));
    let del = node.cni(
        &node.shim_conf(),
        "DEL",
        "warmup",
        &warm.path(),
        pods.namespace(),
        "warmup",
    )?;
    tally.check("warm-up DEL", del.exit == 0, || format!("{del:?}"));
    pods.delete(&node, "warmup")?;
    let base_links = node_links(&node.netns);
    note(&format!("node links: {}", base_links.join(" ")));

    cycles(&node, pods, args.cycles, tally)?;
    expect_clean(&node, &base_links, "after the cycles", tally);
    for size in [40, 80] {
        burst(&node, pods, size, tally)?;
        expect_clean(
            &node,
            &base_links,
            &format!("after the burst of {size}"),
            tally,
        );
    }
    for round in 0..args.kill_rounds {
        kill_round(&mut node, pods, round, tally)?;
        expect_clean(
            &node,
            &base_links,
            &format!("after kill -9 round {}", round + 1),
            tally,
        );
    }
    agent_down(&mut node, pods, tally)?;
    expect_clean(&node, &base_links, "after the agent-down DELs", tally);
    malformed(&node, pods, &base_links, tally)?;
    expect_clean(&node, &base_links, "after the malformed inputs", tally);
    Ok(())
}

/// Waits for the node to be clean, then counts one check.
fn expect_clean(node: &StressNode, base: &[String], when: &str, tally: &mut Tally) {
    let deadline = Instant::now() + CLEAN_WITHIN;
    let mut left = node.leftovers(base);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        left = node.leftovers(base);
    }
    tally.check(&format!("nothing left {when}"), left.is_empty(), || {
        left.join("; ")
    });
}

fn rss(node: &StressNode) -> u64 {
    node.agent_pid()
        .and_then(|pid| inside::rss_kib(pid).ok())
        .map_or(0, |(_, now)| now)
}

/// Least-squares slope of `samples` (x, y).
fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = samples.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

fn cycles(node: &StressNode, pods: &dyn Pods, n: usize, tally: &mut Tally) -> anyhow::Result<()> {
    step(&format!("{n} thick ADD/DEL cycles, a new pod each"));
    let pod = Netns::new("spd");
    pod.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    let every = (n / 50).max(1);
    let mut samples = vec![(0.0, rss(node) as f64)];
    let (mut adds, mut dels) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let started = Instant::now();
    let mut failures = 0;
    for i in 0..n {
        let name = format!("cycle{i}");
        pods.create(node, &name, NETWORKS)?;
        let add = node.cni(
            &node.shim_conf(),
            "ADD",
            &name,
            &pod.path(),
            pods.namespace(),
            &name,
        )?;
        let del = node.cni(
            &node.shim_conf(),
            "DEL",
            &name,
            &pod.path(),
            pods.namespace(),
            &name,
        )?;
        pods.delete(node, &name)?;
        adds.push(add.took);
        dels.push(del.took);
        if add.exit != 0 || del.exit != 0 {
            failures += 1;
            tally.check(&format!("cycle {i}"), false, || {
                format!("ADD {add:?}; DEL {del:?}")
            });
        }
        if (i + 1) % every == 0 {
            samples.push(((i + 1) as f64, rss(node) as f64));
        }
    }
    tally.check("cycles without failure", failures == 0, || {
        format!("{failures} failed")
    });
    let took = started.elapsed();
    adds.sort();
    dels.sort();
    note(&format!(
        "{n} cycles in {:.1} s ({failures} failed); ADD median {} p99 {}; DEL median {} p99 {}",
        took.as_secs_f64(),
        ms(percentile(&adds, 0.5)),
        ms(percentile(&adds, 0.99)),
        ms(percentile(&dels, 0.5)),
        ms(percentile(&dels, 0.99)),
    ));
    let shown: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 10).max(1))
        .map(|(x, y)| format!("{x:.0}:{:.1}", y / 1024.0))
        .collect();
    note(&format!("agent RSS (cycle:MiB): {}", shown.join(" ")));
    let half: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(x, _)| *x >= (n / 2) as f64)
        .collect();
    let s = slope(&half);
    let whole = slope(&samples);
    let growth = s * (n - n / 2) as f64;
    note(&format!(
        "RSS slope: second half {s:.3} KiB/cycle, fitted growth {growth:.0} KiB (bound: \
         {MAX_SLOPE_KIB_PER_CYCLE} KiB/cycle or {MAX_GROWTH_KIB} KiB); whole run {whole:.3} \
         KiB/cycle"
    ));
    if n < MIN_CYCLES_FOR_PLATEAU {
        note(&format!(
            "RSS plateau not judged: {n} cycles are still warm-up (at least \
             {MIN_CYCLES_FOR_PLATEAU})"
        ));
    } else {
        tally.check(
            "RSS flat over the second half",
            s <= MAX_SLOPE_KIB_PER_CYCLE || growth <= MAX_GROWTH_KIB,
            || format!("{s:.3} KiB/cycle, {growth:.0} KiB"),
        );
    }
    Ok(())
}

fn burst_pods(
    node: &StressNode,
    pods: &dyn Pods,
    tag: &str,
    size: usize,
) -> anyhow::Result<Vec<BurstPod>> {
    let mut out = Vec::with_capacity(size);
    for i in 0..size {
        let netns = Netns::new("sbp");
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        let name = format!("{tag}{i}");
        pods.create(node, &name, NETWORKS)?;
        out.push(BurstPod {
            netns,
            id: name.clone(),
            name,
        });
    }
    Ok(out)
}

/// Runs `command` for every pod at once; returns the outcomes in order.
fn all_at_once(
    node: &StressNode,
    ns: &str,
    command: &str,
    pods: &[BurstPod],
) -> Vec<anyhow::Result<Outcome>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| {
                s.spawn(move || {
                    node.cni(
                        &node.shim_conf(),
                        command,
                        &p.id,
                        &p.netns.path(),
                        ns,
                        &p.name,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn ok(outcome: &anyhow::Result<Outcome>) -> bool {
    matches!(outcome, Ok(o) if o.exit == 0)
}

fn describe(outcome: &anyhow::Result<Outcome>) -> String {
    match outcome {
        Ok(o) => format!(
            "exit {} {} {}",
            o.exit,
            o.stdout,
            o.stderr.lines().last().unwrap_or_default()
        ),
        Err(e) => e.to_string(),
    }
}

fn burst(node: &StressNode, pods: &dyn Pods, size: usize, tally: &mut Tally) -> anyhow::Result<()> {
    step(&format!(
        "a burst of {size} concurrent ADDs, then their DELs"
    ));
    let burst = burst_pods(node, pods, &format!("burst{size}-"), size)?;
    let started = Instant::now();
    let adds = all_at_once(node, pods.namespace(), "ADD", &burst);
    let add_took = started.elapsed();
    let peak = node
        .agent_pid()
        .and_then(|p| inside::rss_kib(p).ok())
        .map_or(0, |(peak, _)| peak);
    let failed: Vec<String> = adds.iter().filter(|o| !ok(o)).map(describe).collect();
    tally.check(&format!("burst of {size} ADDs"), failed.is_empty(), || {
        failed.join("; ")
    });
    let started = Instant::now();
    let dels = all_at_once(node, pods.namespace(), "DEL", &burst);
    let del_took = started.elapsed();
    let failed: Vec<String> = dels.iter().filter(|o| !ok(o)).map(describe).collect();
    tally.check(&format!("burst of {size} DELs"), failed.is_empty(), || {
        failed.join("; ")
    });
    note(&format!(
        "{size} ADDs in {:.2} s, {size} DELs in {:.2} s; agent peak RSS {:.1} MiB",
        add_took.as_secs_f64(),
        del_took.as_secs_f64(),
        peak as f64 / 1024.0
    ));
    for p in &burst {
        pods.delete(node, &p.name)?;
    }
    Ok(())
}

fn kill_round(
    node: &mut StressNode,
    pods: &dyn Pods,
    round: usize,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    step(&format!(
        "kill -9 round {}: the agent dies in the middle of a burst of 40",
        round + 1
    ));
    let burst = burst_pods(node, pods, &format!("kill{round}-"), 40)?;
    // Killed once this many ADDs answered: early, halfway, late in the burst.
    let kill_after = [5, 20, 35][round % 3];
    let answered = AtomicUsize::new(0);
    let adds = std::thread::scope(|s| {
        let node_ref: &StressNode = node;
        let ns = pods.namespace();
        let answered = &answered;
        let handles: Vec<_> = burst
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let out = node_ref.cni(
                        &node_ref.shim_conf(),
                        "ADD",
                        &p.id,
                        &p.netns.path(),
                        ns,
                        &p.name,
                    );
                    answered.fetch_add(1, Ordering::SeqCst);
                    out
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::SeqCst) < kill_after && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // kill(2) by pid: the node stays shared with the threads still running their ADDs.
        if let Some(pid) = node_ref.agent_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
    });
    node.kill_agent();
    let started = Instant::now();
    node.start_agent()?;
    let restart = started.elapsed();
    let failed_adds = adds.iter().filter(|o| !ok(o)).count();
    // What kubelet does with a failed ADD: DEL, then ADD again.
    let mut retried = 0;
    for (p, add) in burst.iter().zip(&adds) {
        if ok(add) {
            continue;
        }
        let del = node.cni(
            &node.shim_conf(),
            "DEL",
            &p.id,
            &p.netns.path(),
            pods.namespace(),
            &p.name,
        );
        tally.check(
            &format!("DEL after the failed ADD of {}", p.name),
            ok(&del),
            || describe(&del),
        );
        let again = node.cni(
            &node.shim_conf(),
            "ADD",
            &p.id,
            &p.netns.path(),
            pods.namespace(),
            &p.name,
        );
        tally.check(&format!("retried ADD of {}", p.name), ok(&again), || {
            describe(&again)
        });
        retried += 1;
    }
    let dels = all_at_once(node, pods.namespace(), "DEL", &burst);
    let failed: Vec<String> = dels.iter().filter(|o| !ok(o)).map(describe).collect();
    tally.check(
        "DEL of every pod after the round",
        failed.is_empty(),
        || failed.join("; "),
    );
    note(&format!(
        "killed after {kill_after} answers: {} ADDs had succeeded, {failed_adds} failed and were retried \
         ({retried}); the agent was ready again in {:.2} s",
        adds.len() - failed_adds,
        restart.as_secs_f64()
    ));
    for p in &burst {
        pods.delete(node, &p.name)?;
    }
    Ok(())
}

fn agent_down(node: &mut StressNode, pods: &dyn Pods, tally: &mut Tally) -> anyhow::Result<()> {
    step("the agent down: DEL through the shim's fallback, then the agent starts again");
    let burst = burst_pods(node, pods, "down-", 10)?;
    let adds = all_at_once(node, pods.namespace(), "ADD", &burst);
    let failed: Vec<String> = adds.iter().filter(|o| !ok(o)).map(describe).collect();
    tally.check("ADDs before the agent goes down", failed.is_empty(), || {
        failed.join("; ")
    });
    node.kill_agent();
    let started = Instant::now();
    let dels = all_at_once(node, pods.namespace(), "DEL", &burst);
    let took = started.elapsed();
    let failed: Vec<String> = dels.iter().filter(|o| !ok(o)).map(describe).collect();
    tally.check(
        "fallback DELs with the agent down",
        failed.is_empty(),
        || failed.join("; "),
    );
    // Interfaces, leases, cache and link pins are gone already; records wait for the agent.
    let pins: Vec<PathBuf> = node
        .bpffs
        .entries()
        .into_iter()
        .filter(|p| !p.starts_with("maps"))
        .collect();
    tally.check("no link pin left by the fallback", pins.is_empty(), || {
        format!("{pins:?}")
    });
    let leases = node.leases();
    tally.check("no lease left by the fallback", leases.is_empty(), || {
        leases.join(" ")
    });
    let interfaces: Vec<String> = burst
        .iter()
        .flat_map(|p| node_links(&p.netns))
        .filter(|l| l != "lo")
        .collect();
    tally.check(
        "no interface left in the pods",
        interfaces.is_empty(),
        || interfaces.join(" "),
    );
    note(&format!(
        "10 DELs with the agent down in {:.2} s",
        took.as_secs_f64()
    ));
    node.start_agent()?;
    for p in &burst {
        pods.delete(node, &p.name)?;
    }
    Ok(())
}

/// One malformed input: how to break a valid ADD, and the code expected.
struct Bad {
    name: &'static str,
    code: u64,
    conf: fn(&mut Value),
    env: Option<(&'static str, Option<&'static str>)>,
    networks: &'static str,
}

fn bad(name: &'static str, code: u64, conf: fn(&mut Value)) -> Bad {
    Bad {
        name,
        code,
        conf,
        env: None,
        networks: NETWORKS,
    }
}

fn keep(_: &mut Value) {}

impl Bad {
    /// The same call with `var` set to `value` (`None`: unset).
    fn env(self, var: &'static str, value: Option<&'static str>) -> Self {
        Self {
            env: Some((var, value)),
            ..self
        }
    }

    /// The same call for a pod whose annotation is `networks`.
    fn networks(self, networks: &'static str) -> Self {
        Self { networks, ..self }
    }
}

fn malformed_table() -> Vec<Bad> {
    vec![
        bad("no type", 7, |c| {
            if let Some(o) = c.as_object_mut() {
                o.remove("type");
            }
        }),
        bad("type of another plugin", 7, |c| c["type"] = json!("bridge")),
        bad("daemonSocketDir a number", 7, |c| {
            c["daemonSocketDir"] = json!(5);
        }),
        bad("bpffsDir relative", 7, |c| {
            c["bpffsDir"] = json!("sys/fs/bpf");
        }),
        bad("cniVersion 0.2.1", 1, |c| c["cniVersion"] = json!("0.2.1")),
        bad("no name", 7, |c| {
            if let Some(o) = c.as_object_mut() {
                o.remove("name");
            }
        }),
        bad("cniDir relative", 7, |c| c["cniDir"] = json!("cache")),
        bad("clusterNetwork file missing", 7, |c| {
            c["clusterNetwork"] = json!("/nonexistent/10-net.conf");
        }),
        bad("logOptions.maxAge a string", 7, |c| {
            c["logOptions"] = json!({"maxAge": "5d"});
        }),
        bad("no CNI_COMMAND", 4, keep).env("CNI_COMMAND", None),
        bad("ifname too long", 4, keep).env("CNI_IFNAME", Some("eth0123456789abcdef")),
        bad("netns does not exist", 3, keep).env("CNI_NETNS", Some("/nonexistent/netns")),
        bad("container id with a path", 4, keep).env("CNI_CONTAINERID", Some("../../etc/passwd")),
        bad("unknown network", 7, keep).networks("missing-net"),
        bad("bad network name", 7, keep).networks("Bad_Name"),
        bad("truncated annotation", 7, keep).networks("[{\"name\": \"mv\""),
        bad("macvlan master missing", 7, keep).networks("no-master"),
    ]
}

fn malformed(
    node: &StressNode,
    pods: &dyn Pods,
    base: &[String],
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let table = malformed_table();
    step(&format!(
        "{} malformed inputs, each with its code",
        table.len()
    ));
    // The NAD whose master does not exist, for the last row.
    let no_master = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "nosuchmaster"});
    pods.create_nad(node, "no-master", &no_master)?;
    let pod = Netns::new("smp");
    let netns = pod.path().to_string_lossy().into_owned();
    let mut right = 0;
    for (i, b) in table.iter().enumerate() {
        let name = format!("bad{i}");
        pods.create(node, &name, b.networks)?;
        let mut conf = node.shim_conf();
        (b.conf)(&mut conf);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={name}",
            pods.namespace()
        );
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", &name),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", PLUGIN_DIR),
            ("CNI_ARGS", &args),
        ];
        if let Some((key, value)) = b.env {
            env.retain(|(k, _)| *k != key);
            if let Some(v) = value {
                env.push((key, v));
            }
        }
        let out = node.cni_raw(conf.to_string().as_bytes(), &env)?;
        let good = out.exit == 1 && out.code() == b.code;
        if good {
            right += 1;
        }
        tally.check(
            &format!("malformed input {:?} gives {}", b.name, b.code),
            good,
            || format!("exit {} {}", out.exit, out.stdout),
        );
        let left = node.leftovers(base);
        let links: Vec<String> = node_links(&pod).into_iter().filter(|l| l != "lo").collect();
        tally.check(
            &format!("malformed input {:?} leaves nothing", b.name),
            left.is_empty() && links.is_empty(),
            || format!("{} {}", left.join("; "), links.join(" ")),
        );
        pods.delete(node, &name)?;
    }
    note(&format!(
        "{right} of {} malformed inputs got the right code",
        table.len()
    ));
    Ok(())
}
