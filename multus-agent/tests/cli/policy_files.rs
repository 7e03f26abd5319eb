//! The policy documents the command line takes (`set-policy --file`, `attach --policy`) are
//! strict: a field the form does not have is refused with its name and place, never installed as
//! a policy that leaves the interface open. The documents are read before anything is loaded or
//! attached, so these run without root too.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;

/// Runs `multus-agent ARGS` with `--bpffs` and `--state-dir` of the test's own, returning
/// (success, stderr) and the state directory's entries afterwards.
fn agent(args: &[&str], doc: &str) -> (bool, String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, doc).unwrap();
    let state = dir.path().join("state");
    let bpffs = dir.path().join("bpffs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_multus-agent"));
    cmd.args(args);
    cmd.arg(&file);
    cmd.arg("--bpffs")
        .arg(&bpffs)
        .arg("--state-dir")
        .arg(&state);
    let out = cmd.output().unwrap();
    let left = std::fs::read_dir(&state).map_or(0, Iterator::count);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        left,
    )
}

const CASES: [(&str, &[&str]); 5] = [
    // The NAD annotation's form given to the dataplane's.
    (
        r#"{"ingress":{"default":"allow"},"deny":[{"cidr":"192.0.2.0/24"}]}"#,
        &["deny"],
    ),
    (r#"{"antiSpoof":true}"#, &["antiSpoof"]),
    (
        r#"{"ingress":{"default":"deny","rules":[{"action":"allow","peer":[{"cidr":"192.0.2.0/24"}]}]}}"#,
        &["peer", "ingress.rules[0]"],
    ),
    (
        r#"{"egress":{"default":"deny","rules":[{"action":"allow","ports":[{"protocol":"tcp","port":80}]}]}}"#,
        &["port", "egress.rules[0].ports[0]"],
    ),
    (
        r#"{"anti_spoof":{"mac":"02:00:00:00:00:01","ips":[],"routr":true}}"#,
        &["routr", "anti_spoof"],
    ),
];

#[test]
fn set_policy_refuses_unknown_fields_by_name() {
    for (doc, names) in CASES {
        let (ok, stderr, _) = agent(&["set-policy", "--id", "1", "--file"], doc);
        assert!(!ok, "{doc} was taken");
        for name in names {
            assert!(stderr.contains(name), "{doc}: {name} not in: {stderr}");
        }
    }
}

#[test]
fn attach_refuses_unknown_fields_by_name_and_leaves_nothing() {
    for (doc, names) in CASES {
        let (ok, stderr, left) = agent(
            &[
                "attach",
                "--netns",
                "/var/run/netns/none-such",
                "--interface",
                "net1",
                "--policy",
            ],
            doc,
        );
        assert!(!ok, "{doc} was taken");
        for name in names {
            assert!(stderr.contains(name), "{doc}: {name} not in: {stderr}");
        }
        assert_eq!(left, 0, "{doc}: something was attached");
    }
}
