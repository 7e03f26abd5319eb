//! Root tests of the enforcer alone (no API server): changes fed by hand, the real dataplane
//! on macvlan pods. What the end-to-end tests cannot arrange at will: a change that lands while
//! an ADD is attaching, a relisting that drops an object, updates that change nothing, and an
//! object that was never valid.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;
mod policy_fixture;

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use common::Dirs;
use multus_agent::{
    attachments::{Attachments, Target},
    changes::NadObject,
    dataplane::{Action, AttachMode, AttachmentOwner, AttachmentRecord},
    enforce::{Change, Enforcer, Kind, NewAttachment, Peers, PrepareError, Prepared},
    metrics::{AgentMetrics, BuildInfo},
    policy::{NAD_POLICY_ANNOTATION, NadView, NamespaceView},
    scrape,
};
use multus_testkit::{MacvlanPods, Pod, require_root};
use policy_fixture::{key, labels, pod};

const BLUE: &str = "test/blue";
const CONFIG: &str = r#"{"cniVersion":"1.0.0","type":"macvlan",
  "ipam":{"type":"host-local","subnet":"192.0.2.0/24"}}"#;

fn nad(name: &str, policy: Option<&str>) -> Change {
    let key = key(name);
    let annotations = policy
        .map(|p| labels(&[(NAD_POLICY_ANNOTATION, p)]))
        .unwrap_or_default();
    Change::Nad(
        key.clone(),
        Some(NadObject {
            view: NadView {
                key,
                annotations,
                config: Some(CONFIG.to_owned()),
            },
            uid: None,
            resource_version: None,
        }),
    )
}

/// A full listing of every kind: namespace `test`, pods `test/a` and `test/b` on blue, and
/// `nads`.
fn listing(pods: &MacvlanPods, nads: &[Change]) -> Vec<Change> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        out.push(Change::Relist(kind));
        match kind {
            Kind::Namespace => out.push(Change::Namespace(
                "test".into(),
                Some(NamespaceView {
                    name: "test".into(),
                    labels: labels(&[]),
                }),
            )),
            Kind::Pod => {
                for (name, p) in ["test/a", "test/b"].iter().zip(&pods.pods) {
                    let ip = p.ip4.to_string();
                    let view = pod(name, &[], &[], &[(BLUE, &[ip.as_str()])]);
                    out.push(Change::Pod(key(name), Some(view)));
                }
            }
            Kind::Nad => out.extend_from_slice(nads),
            Kind::Mnp => {}
        }
        out.push(Change::Listed(kind));
    }
    out
}

struct Node {
    attachments: Arc<Attachments>,
    enforcer: Enforcer,
    metrics: AgentMetrics,
    // Dropped after the attachments: they hold the dataplane on these directories.
    _dirs: Dirs,
}

impl Node {
    fn new() -> Self {
        let dirs = Dirs::new();
        let metrics = AgentMetrics::default();
        let attachments =
            Arc::new(Attachments::new(dirs.load(AttachMode::detect()), metrics.clone()).unwrap());
        let enforcer = Enforcer::new(
            Arc::clone(&attachments),
            metrics.clone(),
            Peers::NetworkStatus,
            None,
            None,
        );
        Self {
            attachments,
            enforcer,
            metrics,
            _dirs: dirs,
        }
    }

    fn apply(&self, changes: Vec<Change>) {
        self.enforcer.apply(changes, Instant::now());
    }

    /// A pod's attachment request on `network`.
    fn new_attachment<'a>(
        p: &'a Pod,
        name: &'a str,
        netns: &'a PathBuf,
        network: &str,
    ) -> NewAttachment<'a> {
        NewAttachment {
            container: name,
            pod: ("test", name, None),
            network: key(network),
            netns,
            ifname: &p.ifname,
            ips: vec![IpAddr::V4(p.ip4)],
            mac: p.mac.parse().ok(),
        }
    }

    /// Attaches `new` with the policy `prepared` has for it, as the agent's ADD hook does.
    fn attach(&self, new: &NewAttachment<'_>, prepared: &Prepared) -> Vec<AttachmentRecord> {
        let target = Target {
            netns: new.netns,
            ifname: new.ifname,
            owner: AttachmentOwner {
                namespace: "test".into(),
                pod: new.pod.1.into(),
                network: new.network.to_string(),
                container_id: new.container.into(),
            },
            policy: prepared.policy(0),
            policy_source: prepared.policy_source(0),
        };
        self.attachments.attach_all(&[target]).unwrap()
    }

    fn record(&self, id: u32) -> AttachmentRecord {
        self.attachments
            .records()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap()
    }

    fn updates(&self, operation: &str) -> u64 {
        let registry = scrape::registry(
            &self.metrics,
            Arc::clone(&self.attachments),
            BuildInfo {
                version: String::new(),
                commit: String::new(),
                attach_mode: String::new(),
                kernel: String::new(),
            },
        );
        let text = scrape::encode(&registry).unwrap();
        let series = format!(
            "multus_agent_policy_updates_total{{operation=\"{operation}\",result=\"success\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.parse().unwrap())
    }
}

fn deny_port(record: &AttachmentRecord) -> Option<u16> {
    let policy = record.policy.as_ref()?;
    let rule = policy.ingress.rules.first()?;
    assert_eq!(rule.action, Action::Deny);
    Some(rule.ports.first()?.ports?.start)
}

#[test]
fn the_enforcer_keeps_the_last_valid_policy_skips_no_ops_and_follows_relistings() {
    if !require_root("the_enforcer_keeps_the_last_valid_policy_skips_no_ops_and_follows_relistings")
    {
        return;
    }
    let pods = MacvlanPods::new(2);
    let node = Node::new();
    let netns = pods.pods[0].netns.path();
    let a = Node::new_attachment(&pods.pods[0], "a", &netns, BLUE);

    // Before the first listing an ADD waits, then gives up ("try again later").
    let err = node
        .enforcer
        .prepare(&[Some(a.clone())], Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, PrepareError::NotSynced), "{err}");

    let deny = |port: u16| format!("ingress:\n  deny:\n    - ports: tcp/{port}\n");
    node.apply(listing(&pods, &[nad(BLUE, Some(&deny(8080)))]));
    assert!(*node.enforcer.synced().borrow());
    let prepared = node
        .enforcer
        .prepare(&[Some(a.clone())], Duration::from_secs(1))
        .unwrap();
    let records = node.attach(&a, &prepared);
    node.enforcer.commit(prepared, &records);
    let id = records[0].id;
    let record = node.record(id);
    assert_eq!(deny_port(&record), Some(8080));
    assert_eq!(record.policy_source.as_deref(), Some("nad:test/blue"));
    assert_eq!(
        node.updates("set"),
        0,
        "installed with the attach, not after"
    );

    // An invalid edit keeps the last valid policy; the same valid one again changes nothing.
    node.apply(vec![nad(BLUE, Some("ingress: {deny: [{ports: tcp/0}]}"))]);
    assert_eq!(deny_port(&node.record(id)), Some(8080));
    node.apply(vec![nad(BLUE, Some(&deny(8080)))]);
    assert_eq!(node.updates("set"), 0);
    node.apply(vec![nad(BLUE, Some(&deny(9090)))]);
    assert_eq!(deny_port(&node.record(id)), Some(9090));
    assert_eq!(node.updates("set"), 1);

    // A change that lands while an ADD attaches is applied when the ADD commits.
    let netns_b = pods.pods[1].netns.path();
    let b = Node::new_attachment(&pods.pods[1], "b", &netns_b, BLUE);
    let prepared = node
        .enforcer
        .prepare(&[Some(b.clone())], Duration::from_secs(1))
        .unwrap();
    let records_b = node.attach(&b, &prepared);
    assert_eq!(deny_port(&records_b[0]), Some(9090));
    node.apply(vec![nad(BLUE, Some(&deny(7070)))]);
    node.enforcer.commit(prepared, &records_b);
    assert_eq!(deny_port(&node.record(records_b[0].id)), Some(7070));
    assert_eq!(deny_port(&node.record(id)), Some(7070));
    assert_eq!(node.updates("set"), 3);

    // A relisting without the NAD: it is gone, and so is its policy.
    node.apply(listing(&pods, &[]));
    assert_eq!(node.record(id).policy, None);
    assert_eq!(node.record(id).policy_source, None);
    assert_eq!(node.updates("clear"), 2);

    // A NAD that was never valid: an ADD on its network fails, naming it.
    node.apply(vec![nad("test/red", Some("isolate: maybe"))]);
    let c = Node::new_attachment(&pods.pods[0], "c", &netns, "test/red");
    let err = node
        .enforcer
        .prepare(&[Some(c)], Duration::from_secs(1))
        .unwrap_err();
    assert!(
        matches!(err, PrepareError::Compile(_)) && err.to_string().contains("test/red"),
        "{err}"
    );

    // DEL forgets the attachments: later changes leave them alone.
    node.attachments
        .detach_containers(&["a", "b"].into_iter().collect())
        .unwrap();
    node.enforcer
        .forget_containers(&["a", "b"].into_iter().collect());
    node.apply(vec![nad(BLUE, Some(&deny(6060)))]);
    assert_eq!(node.updates("set"), 3);
    assert!(node.attachments.records().is_empty());
}
