//! The agent restarted the way an operator (or an eviction) does it: `kubectl delete pod`
//! while traffic runs.
use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};

use super::{
    agent::{running_pod, wait_ready},
    metrics::{a_labels, scrape},
    quickstart::{Quickstart, net1_address, ping_ok, start_sample, still_running},
};
use crate::{
    demo::scrape::Scrape,
    e2e::{Cluster, kubectl::Kubectl},
    shell::note,
};

/// `kubectl exec FROM -- ping` in the background, every 0.2 s for at most `seconds`.
struct BackgroundPing {
    child: Child,
    what: String,
}

impl BackgroundPing {
    fn start(kubectl: &Kubectl, from: &str, ip: &str, seconds: u32) -> anyhow::Result<Self> {
        let child = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", kubectl.kubeconfig().display()))
            .args([
                "exec",
                from,
                "--",
                "/bin/busybox",
                "ping",
                "-i",
                "0.2",
                "-w",
                &seconds.to_string(),
                ip,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl exec ping")?;
        Ok(Self {
            child,
            what: format!("{from} -> {ip}"),
        })
    }

    /// Stops the client and counts the replies it printed.
    fn replies(mut self) -> anyhow::Result<usize> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        let replies = out.lines().filter(|l| l.contains("bytes from")).count();
        note(&format!("ping {}: {replies} replies", self.what));
        Ok(replies)
    }
}

/// Every per-interface counter series (kept in pinned maps, so across agent restarts; the
/// agent's own process counters start again) of `before` that is also in `after` has not gone
/// down.
fn counters_go_on(before: &Scrape, after: &Scrape) -> anyhow::Result<usize> {
    let mut compared = 0;
    let dataplane = |name: &str| {
        name.ends_with("_total")
            && (name.starts_with("multus_interface_") || name.starts_with("multus_policy_"))
    };
    for sample in before.samples.iter().filter(|s| dataplane(&s.name)) {
        let Some(now) = after
            .samples
            .iter()
            .find(|s| s.name == sample.name && s.labels == sample.labels)
        else {
            continue;
        };
        ensure!(
            now.value >= sample.value,
            "{} went back: {} before the restart, {} after",
            sample.name,
            sample.value,
            now.value
        );
        compared += 1;
    }
    Ok(compared)
}

/// Deletes the agent pod during two pings (one the MultiNetworkPolicy denies, one it allows).
pub fn check(cluster: &mut Cluster, quick: &Quickstart, scraped: &Scrape) -> anyhow::Result<()> {
    let k = cluster.kubectl().clone();
    let pods: Vec<(String, String)> = ["samplepod-1", "samplepod-2", "samplepod-3"]
        .iter()
        .map(|n| {
            let pod = k.get(&["pod", n])?;
            Ok((
                (*n).to_owned(),
                pod["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let before = scrape(cluster)?;
    let old = running_pod(cluster)?.context("no ready agent pod")?;
    let old_name = old["metadata"]["name"]
        .as_str()
        .context("agent pod without name")?;
    let old_uid = old["metadata"]["uid"]
        .as_str()
        .context("agent pod without uid")?;

    let denied = BackgroundPing::start(&k, "samplepod-3", &quick.a_net1, 120)?;
    let allowed = BackgroundPing::start(&k, "samplepod-2", &quick.a_net1, 120)?;
    std::thread::sleep(Duration::from_secs(2));
    k.run(&[
        "-n",
        "kube-system",
        "delete",
        "pod",
        old_name,
        "--wait=true",
        "--timeout=60s",
    ])?;
    let new = wait_ready(cluster, Some(old_uid))?;
    note(&format!(
        "new agent pod {} ready",
        new["metadata"]["name"].as_str().unwrap_or("?")
    ));
    // Let traffic run against the new agent too.
    std::thread::sleep(Duration::from_secs(3));
    let denied_replies = denied.replies()?;
    let allowed_replies = allowed.replies()?;
    ensure!(
        denied_replies == 0,
        "{denied_replies} denied pings (samplepod-3 -> samplepod-1) passed during the restart"
    );
    ensure!(
        allowed_replies > 0,
        "no allowed ping passed during the restart"
    );

    let after = scrape(cluster)?;
    let compared = counters_go_on(&before, &after)? + counters_go_on(scraped, &after)?;
    let labels = a_labels();
    ensure!(
        after.sum("multus_interface_receive_packets_total", &labels)
            > before.sum("multus_interface_receive_packets_total", &labels),
        "samplepod-1's net1 counted no packet across the restart"
    );
    note(&format!(
        "{compared} counter series compared: none went back"
    ));

    for (name, uid) in &pods {
        still_running(cluster, name, uid)?;
        k.quiet(&[
            "exec",
            name,
            "--",
            "/bin/busybox",
            "ip",
            "link",
            "show",
            "net1",
        ])
        .with_context(|| format!("{name} lost net1"))?;
    }
    note("samplepod-1..3 run on, with net1");
    start_sample(cluster, "samplepod-4", "d")?;
    net1_address(&k.get(&["pod", "samplepod-4"])?)?;
    ping_ok(cluster, "samplepod-4", &quick.b_net1)?;
    note("samplepod-4, created after the restart, has net1 and reaches samplepod-2");
    Ok(())
}
