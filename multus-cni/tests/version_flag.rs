//! `multus-cni --version` for an operator checking which shim a node has; the CNI `VERSION`
//! command a runtime sends is unchanged by it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_multus-cni");

/// The commit this tree is at, as the build records it (`unknown` without git).
fn expected_commit() -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .env_remove("GIT_DIR")
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[test]
fn version_flag_prints_the_crate_version_and_the_commit() {
    let want = format!(
        "multus-cni {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        std::env::var("MULTUS_GIT_COMMIT")
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(expected_commit)
    );
    for flag in ["--version", "-V"] {
        let out = Command::new(BIN)
            .arg(flag)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        assert!(out.stderr.is_empty(), "{flag}: {out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{flag}");
    }
}

#[test]
fn the_cni_version_command_still_answers_with_the_spec_reply() {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.0.0"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reply,
        json!({
            "cniVersion": "1.1.0",
            "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        })
    );
}
