//! The policy compiler at cluster scale, run by `cargo xtask bench policy`: a synthetic cluster
//! (pods spread over namespaces and networks, MultiNetworkPolicies with label, namespace and
//! ipBlock peers and named ports, a node's worth of local attachments), timed for
//! - compiling every local attachment once;
//! - handling pod relabels and policy edits: recompiling only what the change index reports,
//!   against the baseline of recompiling every local attachment after each change.
//!
//! Every address is in 2001:db8::/32; nothing is sent anywhere.
use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use multus_agent::{
    dataplane::Protocol,
    policy::{
        AttachmentKey, LocalAttachment, NamedPort, NamespaceView, ObjectKey, PodNetwork, PodView,
        Snapshot, compile,
    },
};
use multus_kube::crd::v1beta2::MultiNetworkPolicy;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Pods in the cluster.
    #[arg(long, default_value_t = 10_000)]
    pods: u32,
    /// MultiNetworkPolicies.
    #[arg(long, default_value_t = 200)]
    policies: u32,
    /// Local attachments (pods on this node).
    #[arg(long, default_value_t = 110)]
    locals: u32,
    /// Changes applied in each of the two runs.
    #[arg(long, default_value_t = 200)]
    events: u32,
}

const NAMESPACES: u32 = 20;
const NETWORKS: u32 = 4;
const APPS: u32 = 50;

/// xorshift64*: the same cluster and changes every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % u64::from(n)) as u32
    }
}

fn network(k: u32) -> ObjectKey {
    ObjectKey::new("ns0", format!("net{k}"))
}

fn address(i: u32) -> IpAddr {
    let [hi, lo] = [(i >> 16) as u16, i as u16];
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, hi, lo))
}

fn pod(i: u32, app: u32) -> PodView {
    PodView {
        key: ObjectKey::new(format!("ns{}", i % NAMESPACES), format!("pod{i}")),
        labels: [
            ("app".to_owned(), format!("a{app}")),
            (
                "tier".to_owned(),
                if i.is_multiple_of(3) { "back" } else { "front" }.to_owned(),
            ),
        ]
        .into(),
        ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8000 + (i % 7) as u16,
        }],
        networks: vec![PodNetwork {
            network: network(i % NETWORKS),
            interface: "net1".into(),
            ips: vec![address(i)],
        }],
    }
}

fn policy(j: u32, variant: u32) -> anyhow::Result<MultiNetworkPolicy> {
    let value = json!({
        "apiVersion": "k8s.cni.cncf.io/v1beta2",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": format!("p{j}"),
            "namespace": format!("ns{}", j % NAMESPACES),
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": format!("ns0/net{}", j % NETWORKS)},
        },
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                "values": [format!("a{}", j % APPS), format!("a{}", (j + 1) % APPS)]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"app": format!("a{}", (j + variant + 3) % APPS)}},
                     "namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 4)}}},
                    {"ipBlock": {"cidr": "2001:db8:ff::/48", "except": ["2001:db8:ff::/64"]}},
                ],
                "ports": [{"port": "http"}, {"port": 443}],
            }],
            "egress": [{
                "to": [{"podSelector": {"matchExpressions":
                    [{"key": "tier", "operator": "In", "values": ["back"]}]}}],
                "ports": [{"port": "http"}],
            }],
        },
    });
    serde_json::from_value(value).context("policy object")
}

fn build(args: &Args) -> anyhow::Result<(Snapshot, Vec<AttachmentKey>)> {
    let mut s = Snapshot::new();
    for n in 0..NAMESPACES {
        s.upsert_namespace(NamespaceView {
            name: format!("ns{n}"),
            labels: [("team".to_owned(), format!("t{}", n % 4))].into(),
        });
    }
    for i in 0..args.pods {
        s.upsert_pod(pod(i, i % APPS));
    }
    for j in 0..args.policies {
        s.upsert_mnp(&policy(j, 0)?);
    }
    let step = (args.pods / args.locals.max(1)).max(1);
    let mut locals = Vec::new();
    for i in (0..args.pods)
        .step_by(step as usize)
        .take(args.locals as usize)
    {
        let view = pod(i, i % APPS);
        locals.push(s.add_local(LocalAttachment {
            pod: view.key.clone(),
            interface: "net1".into(),
            network: network(i % NETWORKS),
            ips: vec![address(i)],
            mac: "02:00:00:00:00:01".parse()?,
        }));
    }
    Ok((s, locals))
}

/// One change: a pod relabelled, or (every tenth) a policy edited.
enum Change {
    Relabel(u32, u32),
    Edit(u32, u32),
}

fn changes(args: &Args) -> Vec<Change> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..args.events)
        .map(|e| {
            if e % 10 == 9 {
                Change::Edit(rng.below(args.policies.max(1)), 1 + rng.below(APPS))
            } else {
                Change::Relabel(rng.below(args.pods.max(1)), rng.below(APPS))
            }
        })
        .collect()
}

/// Applies every change and recompiles after each: everything (`indexed == false`) or what the
/// index reports. Returns the time taken and the attachments compiled.
fn replay(
    mut s: Snapshot,
    locals: &[AttachmentKey],
    changes: &[Change],
    indexed: bool,
) -> anyhow::Result<(Duration, usize)> {
    let start = Instant::now();
    let mut compiled = 0;
    for change in changes {
        let update = match change {
            Change::Relabel(i, app) => s.upsert_pod(pod(*i, *app)),
            Change::Edit(j, variant) => s.upsert_mnp(&policy(*j, *variant)?),
        };
        let targets: Vec<&AttachmentKey> = if indexed {
            update.affected.iter().collect()
        } else {
            locals.iter().collect()
        };
        for key in targets {
            compile(&s, key).with_context(|| format!("compiling {key}"))?;
            compiled += 1;
        }
    }
    Ok((start.elapsed(), compiled))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let (snapshot, locals) = build(&args)?;
    println!(
        "cluster: {} pods, {} namespaces, {} networks, {} policies, {} local attachments \
         (built in {:.0} ms)",
        args.pods,
        NAMESPACES,
        NETWORKS,
        args.policies,
        locals.len(),
        start.elapsed().as_secs_f64() * 1e3
    );

    let start = Instant::now();
    let (mut rules, mut peers, mut with_policy) = (0usize, 0usize, 0u32);
    for key in &locals {
        if let Some(c) = compile(&snapshot, key)? {
            with_policy += 1;
            for r in c.policy.ingress.rules.iter().chain(&c.policy.egress.rules) {
                rules += 1;
                peers += r.peers.len();
            }
        }
    }
    let all = start.elapsed();
    println!(
        "compile every attachment: {:.1} ms, {:.0} us each; {with_policy} with a policy, \
         {:.1} rules and {:.0} peers each on average",
        all.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e6 / locals.len().max(1) as f64,
        rules as f64 / f64::from(with_policy.max(1)),
        peers as f64 / f64::from(with_policy.max(1)),
    );

    let changes = changes(&args);
    let (base, base_n) = replay(snapshot.clone(), &locals, &changes, false)?;
    let (idx, idx_n) = replay(snapshot, &locals, &changes, true)?;
    let per_event = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(args.events.max(1));
    println!(
        "{} changes (pod relabels, every tenth a policy edit), recompiling after each:",
        args.events
    );
    println!(
        "  baseline, every attachment:   {:8.3} ms per change ({base_n} compiles)",
        per_event(base)
    );
    println!(
        "  change index, affected only:  {:8.3} ms per change ({idx_n} compiles, {:.1} per change)",
        per_event(idx),
        idx_n as f64 / f64::from(args.events.max(1))
    );
    println!(
        "  ratio: {:.1}% of the baseline's time",
        100.0 * idx.as_secs_f64() / base.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}
