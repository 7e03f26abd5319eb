//! The image loaded by podman (`podman load`), into a store of the test's own (root and run
//! directories under a temporary directory, the vfs driver: no mounts, no clash with other
//! stores on the machine).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;

use super::{VERSION, built};

#[test]
fn image_loads_into_podman() {
    if !multus_testkit::root::require_root("image_loads_into_podman") {
        return;
    }
    let (_, written) = built();
    let dir = tempfile::Builder::new()
        .prefix("multus-podman-")
        .tempdir()
        .unwrap();
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .output()
            .expect("podman (Debian's podman package; `cargo xtask setup` installs it)");
        assert!(out.status.success(), "podman {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let loaded = podman(&["load", "-i", written.path.to_str().unwrap()]);
    let reference = format!("ghcr.io/multus-rs/multus-rs:{VERSION}");
    assert!(
        loaded.contains(&format!("Loaded image: {reference}")),
        "{loaded}"
    );
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]);
    assert!(
        images
            .lines()
            .any(|l| l == format!("{reference} {}", written.digest)),
        "{images}"
    );
}
