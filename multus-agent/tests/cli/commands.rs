//! The `multus-agent` command line as an operator uses it: `--version`, one name for the bpffs
//! flag on every subcommand, `detach --all` past a failure (root), and `status` over a busy
//! node's records: filters, output modes, the audit column, the per-pod view.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    path::Path,
    process::{Command, Output},
};

use multus_testkit::{BpffsDir, Netns, require_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_multus-agent");

fn agent(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MULTUS_AGENT_CONFIG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let out = agent(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let commit = match Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .env_remove("GIT_DIR")
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_owned(),
        _ => "unknown".to_owned(),
    };
    let commit = std::env::var("MULTUS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or(commit);
    assert_eq!(
        stdout(&out),
        format!(
            "multus-agent {} (commit {commit})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The metric says the same: the same constant feeds both.
    assert_eq!(multus_cni::build_info::VERSION, env!("CARGO_PKG_VERSION"));
    assert_eq!(multus_cni::build_info::COMMIT, commit);
}

#[test]
fn every_dataplane_subcommand_takes_bpffs_dir_and_the_bpffs_alias() {
    for sub in [
        "attach",
        "set-policy",
        "clear-policy",
        "gc",
        "detach",
        "counters",
        "run",
        "status",
    ] {
        let help = stdout(&agent(&[sub, "--help"]));
        assert!(help.contains("--bpffs-dir"), "{sub}:\n{help}");
        assert!(!help.contains("--bpffs "), "{sub}: one name\n{help}");
    }
}

/// A record as the dataplane writes it.
fn record(id: u32, ns: &str, pod: &str, network: &str, ifname: &str) -> Value {
    json!({
        "id": id, "netns": format!("/var/run/netns/cli-test-{id}"), "ifname": ifname,
        "ifindex": 2 + id, "netns_cookie": 4096 + u64::from(id), "mode": "tcx",
        "owner": {"namespace": ns, "pod": pod, "network": network,
                  "container_id": format!("c0ffee{id:04}")},
        "policy": {"ingress": {"default": "deny"}, "egress": {"default": "allow"}},
        "policy_source": format!("nad:{network}"),
    })
}

/// A node's state directory with the records of a few pods (no pins: status says it cannot
/// read the counters and shows the rest).
struct Records {
    state: tempfile::TempDir,
    bpffs: tempfile::TempDir,
}

impl Records {
    fn new() -> Self {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("attachments");
        std::fs::create_dir_all(&dir).unwrap();
        let long_ns = "team-with-a-rather-long-namespace-name";
        for r in [
            record(
                1,
                long_ns,
                "frontend-7d9f8b6c5d-x2x9q",
                &format!("{long_ns}/storage-backplane-network"),
                "net1",
            ),
            record(2, "web", "db-0", "web/macvlan", "net1"),
            record(3, "web", "db-0", "infra/mgmt", "net2"),
            record(4, "web", "db-1", "web/macvlan", "net1"),
        ] {
            std::fs::write(
                dir.join(format!("{}.json", r["id"])),
                serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
        }
        Self {
            state,
            bpffs: tempfile::tempdir().unwrap(),
        }
    }

    fn status(&self, flag: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "status",
            flag,
            self.bpffs.path().to_str().unwrap(),
            "--state-dir",
            self.state.path().to_str().unwrap(),
        ];
        all.extend(args);
        let out = agent(&all);
        assert!(out.status.success(), "{all:?}: {out:?}");
        out
    }

    fn ids(&self, args: &[&str]) -> Vec<u64> {
        let rows: Value = serde_json::from_slice(&self.status("--bpffs-dir", args).stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    }
}

#[test]
fn status_filters_by_namespace_pod_and_network() {
    let node = Records::new();
    assert_eq!(node.ids(&["--json"]), [1, 2, 3, 4]);
    assert_eq!(node.ids(&["-o", "json", "-n", "web"]), [2, 3, 4]);
    assert_eq!(node.ids(&["--json", "--pod", "web/db-0"]), [2, 3]);
    assert_eq!(node.ids(&["--json", "--pod", "db-1"]), [4]);
    assert_eq!(node.ids(&["--json", "--network", "macvlan"]), [2, 4]);
    assert_eq!(node.ids(&["--json", "--network", "infra/mgmt"]), [3]);
    assert_eq!(
        node.ids(&[
            "--json",
            "-n",
            "web",
            "--network",
            "web/macvlan",
            "--pod",
            "db-0"
        ]),
        [2]
    );
    assert!(node.ids(&["--json", "-n", "nowhere"]).is_empty());
    // The old flag name still works.
    let out = node.status("--bpffs", &["--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // No pinned counters: said once on stderr, the rows still listed.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
}

/// Where each header cell starts.
fn header_columns(table: &str) -> Vec<(String, usize)> {
    let header = table.lines().next().unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    for cell in header.split("  ").map(str::trim).filter(|c| !c.is_empty()) {
        let start = header[at..].find(cell).unwrap() + at;
        out.push((cell.to_owned(), start));
        at = start + cell.len();
    }
    out
}

#[test]
fn status_tables_fit_long_names_and_show_audit_and_pods() {
    let node = Records::new();
    let table = stdout(&node.status("--bpffs-dir", &[]));
    let cols = header_columns(&table);
    let at = |name: &str| cols.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(cols.iter().any(|(n, _)| n == "AUDIT"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    // The long network name does not push the columns after it out of line.
    for line in &lines[1..] {
        let interface = line[at("INTERFACE")..].split_whitespace().next().unwrap();
        assert!(interface.starts_with("net"), "{line}\n{table}");
        assert!(line[at("POLICY")..].starts_with("nad:"), "{line}\n{table}");
    }
    assert!(
        lines[1].contains("team-with-a-rather-long-namespace-name/storage-backplane-network"),
        "{table}"
    );

    let wide = stdout(&node.status("--bpffs-dir", &["-o", "wide", "--pod", "web/db-0"]));
    let cols = header_columns(&wide);
    for name in [
        "MODE",
        "CONTAINER",
        "NETNS",
        "RX DROPS",
        "TX DROPS",
        "AUDIT",
    ] {
        assert!(cols.iter().any(|(n, _)| n == name), "{name}:\n{wide}");
    }
    assert_eq!(wide.lines().count(), 3, "{wide}");
    assert!(
        wide.contains("c0ffee0002") && wide.contains("/var/run/netns/cli-test-3"),
        "{wide}"
    );

    // One pod across its interfaces.
    let pods = stdout(&node.status("--bpffs-dir", &["-o", "pods", "-n", "web"]));
    let lines: Vec<Vec<&str>> = pods
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{pods}");
    assert_eq!(
        lines[0][..3],
        ["web/db-0", "net1,net2", "web/macvlan,infra/mgmt"],
        "{pods}"
    );
    assert_eq!(lines[1][..3], ["web/db-1", "net1", "web/macvlan"], "{pods}");
}

/// The CLI on a real dataplane: two interfaces attached (one with the old flag name), one made
/// impossible to detach; `detach --all` detaches the other, reports the failure and fails;
/// once the obstacle is gone it finishes.
#[test]
fn detach_all_goes_on_past_a_failure_and_reports_it() {
    if !require_root("detach_all_goes_on_past_a_failure_and_reports_it") {
        return;
    }
    let ns = Netns::new("acl");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    let bpffs = BpffsDir::new("acl");
    let state = tempfile::tempdir().unwrap();
    let (b, s) = (
        bpffs.path().to_str().unwrap().to_owned(),
        state.path().to_str().unwrap().to_owned(),
    );
    let netns = ns.path();
    let run = |args: &[&str]| -> Output {
        let out = agent(args);
        eprintln!("{args:?}: {out:?}");
        out
    };
    let mut ids = Vec::new();
    for (flag, ifname) in [("--bpffs-dir", "va"), ("--bpffs", "vb")] {
        let out = run(&[
            "attach",
            flag,
            &b,
            "--state-dir",
            &s,
            "--netns",
            netns.to_str().unwrap(),
            "--interface",
            ifname,
        ]);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        let id: u32 = text
            .split(" as ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no id in {text}"));
        ids.push(id);
    }
    let counters = run(&["counters", "--bpffs", &b, "--state-dir", &s, "--json"]);
    assert!(counters.status.success(), "{counters:?}");
    let rows: Value = serde_json::from_slice(&counters.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);

    // bpffs takes directories but no files: a directory in the first attachment's link
    // directory makes removing that directory fail.
    let stuck = Path::new(&b)
        .join("links")
        .join(ids[0].to_string())
        .join("stuck");
    std::fs::create_dir(&stuck).unwrap();
    let out = run(&["detach", "--bpffs-dir", &b, "--state-dir", &s, "--all"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("detaching {}", ids[0])), "{err}");
    assert!(
        err.contains("1 of 2 attachments could not be detached"),
        "{err}"
    );
    assert_eq!(stdout(&out), format!("detached {}\n", ids[1]));
    let left: Vec<String> = std::fs::read_dir(state.path().join("attachments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(left, [format!("{}.json", ids[0])]);

    std::fs::remove_dir(&stuck).unwrap();
    let out = run(&["detach", "--bpffs", &b, "--state-dir", &s, "--all"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), format!("detached {}\n", ids[0]));
    let gc = run(&["gc", "--bpffs", &b, "--state-dir", &s]);
    assert!(gc.status.success(), "{gc:?}");
}
