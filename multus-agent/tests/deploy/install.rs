//! Node install end to end: the real `multus-agent install` binary against temporary "host"
//! directories. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::install_support;

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    process::Command,
};

use install_support::{Host, Install, ProjectedVolume, names, run_once, until};
use serde_json::{Value, json};

/// A flannel-like primary: a conflist whose plugins declare different capabilities.
const FLANNEL: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "198.51.100.0/24"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}"#;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn thin_from_conflist_primary() {
    let host = Host::new();
    host.write_primary("10-flannel.conflist", FLANNEL);
    // Later alphabetically, so not the primary; a leftover of ours is never the primary either.
    host.write_primary(
        "20-other.conf",
        r#"{"cniVersion": "0.4.0", "name": "o", "type": "ptp"}"#,
    );
    let (status, logs) = run_once(&host, &["--multus-log-level", "verbose"], &[]);
    assert!(status.success(), "{logs}");

    let conf = host.wait_json("00-multus.conf");
    let primary: Value = serde_json::from_str(FLANNEL).unwrap();
    assert_eq!(
        conf,
        json!({
            "cniVersion": "0.4.0",
            "name": "multus-cni-network",
            "type": "multus",
            "capabilities": {"bandwidth": true, "portMappings": true},
            "logLevel": "verbose",
            "delegates": [primary],
        })
    );
    assert_eq!(mode(&host.conf_file("00-multus.conf")), 0o600);
    // Not in a pod: no kubeconfig is written or referenced.
    assert_eq!(
        host.conf_names(),
        ["00-multus.conf", "10-flannel.conflist", "20-other.conf"]
    );

    let installed = host.bin.join("multus");
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(&host.source).unwrap()
    );
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(names(&host.bin), ["multus"], "no temp files left");
    assert!(logs.contains("installed the CNI binary"), "{logs}");

    // A second run changes nothing: same inodes, binary copy skipped.
    let inodes = |h: &Host| {
        [h.bin.join("multus"), h.conf_file("00-multus.conf")]
            .map(|p| fs::metadata(p).unwrap().ino())
    };
    let before = inodes(&host);
    let (status, logs) = run_once(&host, &["--multus-log-level", "verbose"], &[]);
    assert!(status.success(), "{logs}");
    assert!(logs.contains("CNI binary already up to date"), "{logs}");
    assert!(!logs.contains("wrote the multus configuration"), "{logs}");
    assert_eq!(inodes(&host), before);
}

#[test]
fn thick_from_conf_primary() {
    let host = Host::new();
    host.write_primary(
        "10-bridge.conf",
        r#"{"cniVersion": "0.3.1", "name": "br", "type": "bridge",
            "capabilities": {"ips": true, "mac": false}}"#,
    );
    let (status, logs) = run_once(
        &host,
        &[
            "--thick",
            "--daemon-socket-dir",
            "/run/multus-test",
            "--namespace-isolation",
            "--global-namespaces",
            "default,infra",
        ],
        &[],
    );
    assert!(status.success(), "{logs}");
    let conf = host.wait_json("00-multus.conf");
    assert_eq!(
        conf,
        json!({
            "cniVersion": "0.3.1",
            "name": "multus-cni-network",
            "type": "multus-shim",
            "capabilities": {"ips": true},
            "clusterNetwork": host.conf_file("10-bridge.conf").display().to_string(),
            "daemonSocketDir": "/run/multus-test",
            "namespaceIsolation": true,
            "globalNamespaces": "default,infra",
        })
    );
    assert_eq!(names(&host.bin), ["multus-shim"]);
}

#[test]
fn one_point_oh_primary_gives_a_conflist_and_replaces_the_old_conf() {
    let host = Host::new();
    // What a previous install (or Multus) left: it would sort before 00-multus.conflist.
    fs::write(host.conf_file("00-multus.conf"), "{}").unwrap();
    host.write_primary(
        "10-bridge.conflist",
        r#"{"cniVersion": "1.0.0", "name": "br", "plugins": [
            {"type": "bridge", "capabilities": {"ips": true}},
            {"type": "tuning", "capabilities": {"mac": true}}]}"#,
    );
    let (status, logs) = run_once(&host, &[], &[]);
    assert!(status.success(), "{logs}");
    let conf = host.wait_json("00-multus.conflist");
    assert_eq!(conf["cniVersion"], "1.0.0");
    assert_eq!(conf["name"], "multus-cni-network");
    assert_eq!(conf["plugins"].as_array().unwrap().len(), 1);
    assert_eq!(conf["plugins"][0]["type"], "multus");
    assert_eq!(
        conf["plugins"][0]["capabilities"],
        json!({"ips": true, "mac": true})
    );
    assert_eq!(conf["plugins"][0]["delegates"][0]["name"], "br");
    assert_eq!(
        host.conf_names(),
        ["00-multus.conflist", "10-bridge.conflist"]
    );
}

#[test]
fn incompatible_or_unsupported_cni_version_is_refused() {
    let host = Host::new();
    host.write_primary(
        "10-old.conf",
        r#"{"cniVersion": "0.3.1", "name": "old", "type": "bridge"}"#,
    );
    let (status, logs) = run_once(&host, &["--cni-version", "1.0.0"], &[]);
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("10-old.conf"), "{logs}");
    assert!(
        logs.contains(
            "cniVersion 0.3.1 is older than 0.4.0 while the multus configuration would be 1.0.0"
        ),
        "{logs}"
    );
    assert_eq!(host.conf_names(), ["10-old.conf"], "nothing written");

    host.write_primary(
        "10-old.conf",
        r#"{"cniVersion": "0.2.1", "name": "old", "type": "bridge"}"#,
    );
    let (status, logs) = run_once(&host, &[], &[]);
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("cniVersion \"0.2.1\" is not supported by multus-cni"),
        "{logs}"
    );
    assert_eq!(host.conf_names(), ["10-old.conf"], "nothing written");

    let (status, logs) = run_once(&host, &["--cni-version", "9.9.9"], &[]);
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("--cni-version: \"9.9.9\" is not supported"),
        "{logs}"
    );
}

#[test]
fn waits_for_a_primary_that_appears_later() {
    let host = Host::new();
    let mut args = host.args();
    args.extend(["--once", "--primary-wait", "600"].map(Into::into));
    let mut install = Install::spawn(&args, &[]);
    install.wait_log("waiting: no primary CNI configuration");
    assert!(install.running());
    assert_eq!(
        host.conf_names(),
        Vec::<String>::new(),
        "never generated from nothing"
    );
    // A primary CNI that writes in place is seen half-written first: that is waited out too.
    fs::write(host.conf_file("10-flannel.conflist"), &FLANNEL[..40]).unwrap();
    install.wait_log("incomplete JSON");
    assert!(install.running());
    assert!(!host.conf_file("00-multus.conf").exists());
    fs::write(host.conf_file("10-flannel.conflist"), FLANNEL).unwrap();
    let (status, logs) = install.wait_exit();
    assert!(status.success(), "{logs}");
    assert_eq!(
        host.wait_json("00-multus.conf")["delegates"][0]["name"],
        "cbr0"
    );
}

#[test]
fn bounded_wait_fails_clearly() {
    let host = Host::new();
    let (status, logs) = run_once(&host, &["--primary-wait", "1"], &[]);
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("no primary CNI configuration (*.conf, *.conflist, *.json) in"),
        "{logs}"
    );
    assert!(logs.contains("within 1"), "{logs}");
    assert_eq!(host.conf_names(), Vec::<String>::new());
}

#[test]
fn readiness_indicator_file_gates_generation() {
    let host = Host::new();
    host.write_primary("10-flannel.conflist", FLANNEL);
    let ready_dir = host.dir.path().join("run/flannel");
    fs::create_dir_all(&ready_dir).unwrap();
    let ready = ready_dir.join("subnet.env");
    let mut args = host.args();
    args.extend(["--once", "--readiness-indicator-file"].map(Into::into));
    args.push(ready.clone().into());
    let mut install = Install::spawn(&args, &[]);
    install.wait_log("readiness indicator file");
    assert!(install.running());
    assert!(!host.conf_file("00-multus.conf").exists());
    fs::write(&ready, "FLANNEL_NETWORK=198.51.100.0/24\n").unwrap();
    let (status, logs) = install.wait_exit();
    assert!(status.success(), "{logs}");
    let conf = host.wait_json("00-multus.conf");
    assert_eq!(conf["readinessindicatorfile"], ready.display().to_string());
}

#[test]
fn watch_follows_the_primary_keeps_the_config_without_it_and_on_sigterm() {
    let host = Host::new();
    host.write_primary("10-flannel.conflist", FLANNEL);
    let mut args = host.args();
    args.push("--watch".into());
    let mut install = Install::spawn(&args, &[]);
    let first = host.wait_json("00-multus.conf");
    assert_eq!(
        first["delegates"][0]["plugins"].as_array().unwrap().len(),
        3
    );
    install.wait_log("watching for changes");

    // The primary changes in place: regenerated with the new capability set.
    let changed = FLANNEL.replace(
        r#""bridge": "cni0","#,
        r#""bridge": "cni0", "capabilities": {"ips": true},"#,
    );
    fs::write(host.conf_file("10-flannel.conflist"), &changed).unwrap();
    let conf = until("the regenerated configuration", || {
        let v = host.wait_json("00-multus.conf");
        (v["capabilities"].get("ips").is_some()).then_some(v)
    });
    assert_eq!(
        conf["capabilities"],
        json!({"bandwidth": true, "ips": true, "portMappings": true})
    );
    assert_eq!(
        conf["delegates"][0],
        serde_json::from_str::<Value>(&changed).unwrap()
    );
    assert_eq!(mode(&host.conf_file("00-multus.conf")), 0o600);

    // The primary goes away: the configuration stays as it was.
    let kept = fs::read(host.conf_file("00-multus.conf")).unwrap();
    let mark = install.line_count();
    fs::remove_file(host.conf_file("10-flannel.conflist")).unwrap();
    install.wait_log_after(mark, "keeping the multus configuration generated from");
    assert_eq!(fs::read(host.conf_file("00-multus.conf")).unwrap(), kept);

    // A new primary at 1.0.0 appears: the conflist replaces the conf.
    host.write_primary(
        "10-bridge.conflist",
        r#"{"cniVersion": "1.0.0", "name": "br", "plugins": [{"type": "bridge"}]}"#,
    );
    let list = host.wait_json("00-multus.conflist");
    assert_eq!(list["plugins"][0]["delegates"][0]["name"], "br");
    until("the old .conf to go", || {
        (!host.conf_file("00-multus.conf").exists()).then_some(())
    });

    // An incompatible change is refused and logged; the last good configuration stays.
    let good = fs::read(host.conf_file("00-multus.conflist")).unwrap();
    let mark = install.line_count();
    host.write_primary(
        "10-bridge.conflist",
        r#"{"cniVersion": "0.2.1", "name": "br", "plugins": [{"type": "bridge"}]}"#,
    );
    install.wait_log_after(mark, "not updated, keeping the last one");
    assert_eq!(
        fs::read(host.conf_file("00-multus.conflist")).unwrap(),
        good
    );
    assert!(install.running());

    // SIGTERM: a clean exit that leaves the configuration in place.
    let (status, logs) = install.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("stopping; the multus configuration stays in place"),
        "{logs}"
    );
    assert_eq!(
        fs::read(host.conf_file("00-multus.conflist")).unwrap(),
        good
    );
    assert_eq!(
        host.conf_names(),
        ["00-multus.conflist", "10-bridge.conflist"]
    );
}

/// Spawns a binary this process has just written. Another test thread forking meanwhile holds
/// the written file's descriptor until its exec, and exec then fails with ETXTBSY for a moment.
fn spawn_fresh_copy(cmd: &mut Command) -> std::process::Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{cmd:?} stayed busy (ETXTBSY) for a second");
}

/// Kills and reaps a process on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_is_replaced_while_the_old_one_runs() {
    let host = Host::new();
    host.write_primary("10-flannel.conflist", FLANNEL);
    let target = host.bin.join("multus");
    fs::copy("/bin/sleep", &target).unwrap();
    let mut old = Running(spawn_fresh_copy(Command::new(&target).arg("600")));
    // The old binary is busy: writing it in place, as a naive copy would, fails.
    let in_place = fs::OpenOptions::new().write(true).open(&target);
    assert_eq!(
        in_place.unwrap_err().raw_os_error(),
        Some(libc::ETXTBSY),
        "the test must really have a busy binary"
    );

    let (status, logs) = run_once(&host, &[], &[]);
    assert!(status.success(), "{logs}");
    assert!(
        old.0.try_wait().unwrap().is_none(),
        "the old binary still runs"
    );
    assert_eq!(fs::read(&target).unwrap(), fs::read(&host.source).unwrap());
    let out = Command::new(&target).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "multus-new\n");
    assert_eq!(names(&host.bin), ["multus"], "no temp files left");
}

#[test]
fn stale_temp_files_of_killed_installs_are_swept() {
    let host = Host::new();
    host.write_primary("10-flannel.conflist", FLANNEL);
    let stale = [
        host.bin.join(".multus.tmp-999999-0"),
        host.conf_file(".00-multus.conf.tmp-999999-0"),
    ];
    let foreign = host.bin.join(".bridge.tmp-1");
    for f in stale.iter().chain([&foreign]) {
        fs::write(f, "x").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let (status, logs) = run_once(&host, &[], &[]);
    assert!(status.success(), "{logs}");
    for f in &stale {
        assert!(!f.exists(), "{} left", f.display());
    }
    assert!(
        foreign.exists(),
        "other programs' files are not ours to remove"
    );
}

#[test]
fn kubeconfig_is_private_and_follows_the_token() {
    for inline in [false, true] {
        let host = Host::new();
        host.write_primary("10-flannel.conflist", FLANNEL);
        let mut volume = ProjectedVolume::new(&host.sa);
        volume.install("token-1", b"CA-1");
        let kubeconfig = host.conf.join("multus.d/multus.kubeconfig");
        let mut args = host.args();
        args.extend(["--watch", "--kubeconfig-host-path"].map(Into::into));
        args.push(kubeconfig.clone().into());
        if inline {
            args.push("--kubeconfig-inline-token".into());
        }
        // A documentation address: nothing here talks to it.
        let env = [
            ("KUBERNETES_SERVICE_HOST", "2001:db8::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
        ];
        let install = Install::spawn(&args, &env);
        let conf = host.wait_json("00-multus.conf");
        assert_eq!(conf["kubeconfig"], kubeconfig.display().to_string());

        let dir = host.conf.join("multus.d");
        let token_copy = dir.join("multus.token");
        let ca_copy = dir.join("multus-ca.crt");
        let read_yaml = || -> serde_yaml::Value {
            serde_yaml::from_slice(&fs::read(&kubeconfig).unwrap()).unwrap()
        };
        let yaml = read_yaml();
        let cluster = &yaml["clusters"][0]["cluster"];
        assert_eq!(
            cluster["server"].as_str(),
            Some("https://[2001:db8::1]:6443")
        );
        assert_eq!(
            cluster["certificate-authority"].as_str(),
            Some(ca_copy.to_str().unwrap())
        );
        assert_eq!(fs::read(&ca_copy).unwrap(), b"CA-1");
        let user = &yaml["users"][0]["user"];
        if inline {
            assert_eq!(user["token"].as_str(), Some("token-1"));
            assert!(!token_copy.exists());
            assert_eq!(names(&dir), ["multus-ca.crt", "multus.kubeconfig"]);
        } else {
            assert_eq!(
                user["tokenFile"].as_str(),
                Some(token_copy.to_str().unwrap())
            );
            assert_eq!(fs::read(&token_copy).unwrap(), b"token-1");
            assert_eq!(
                names(&dir),
                ["multus-ca.crt", "multus.kubeconfig", "multus.token"]
            );
        }
        for f in fs::read_dir(&dir).unwrap() {
            assert_eq!(mode(&f.unwrap().path()), 0o600);
        }
        install.wait_log("watching for changes");

        // Kubelet rotates the projected token.
        let kubeconfig_inode = fs::metadata(&kubeconfig).unwrap().ino();
        volume.install("token-2", b"CA-1");
        if inline {
            until("the kubeconfig to carry the new token", || {
                (read_yaml()["users"][0]["user"]["token"].as_str() == Some("token-2")).then_some(())
            });
        } else {
            until("the token copy to follow", || {
                (fs::read(&token_copy).ok()? == b"token-2").then_some(())
            });
            assert_eq!(
                fs::metadata(&kubeconfig).unwrap().ino(),
                kubeconfig_inode,
                "with tokenFile the kubeconfig itself is not rewritten"
            );
        }
        for f in fs::read_dir(&dir).unwrap() {
            assert_eq!(mode(&f.unwrap().path()), 0o600);
        }
        let (status, logs) = install.terminate();
        assert!(status.success(), "{logs}");
    }
}

#[test]
fn missing_host_directory_is_a_clear_error() {
    let host = Host::new();
    fs::remove_dir(&host.bin).unwrap();
    let (status, logs) = run_once(&host, &[], &[]);
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("CNI bin directory"), "{logs}");
    assert!(logs.contains("does not exist"), "{logs}");
}

/// The command line of the container `name` of the shipped DaemonSet (init containers too),
/// after `multus-agent install`.
fn shipped_install_flags(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/30-daemonset.yaml");
    let docs = multus_testkit::kube::read_yaml_documents(&path).unwrap();
    let spec = &docs[0]["spec"]["template"]["spec"];
    let containers = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["containers"].as_array().unwrap());
    let c = containers
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {}", path.display()));
    let command: Vec<String> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(command[0].ends_with("/multus-agent"), "{command:?}");
    assert_eq!(command[1], "install", "{command:?}");
    // The agent's configuration is a ConfigMap in the pod; here, the file it is made from.
    let mut flags = command[2..].to_vec();
    if let Some(i) = flags.iter().position(|f| f == "--agent-config") {
        flags[i + 1] = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/config/agent-config.json")
            .display()
            .to_string();
    }
    flags
}

/// The multus configuration a runtime would load now (the first file by name), once it names
/// `primary` as the cluster network; returns it and how long it took to get there.
fn wait_clusternetwork(host: &Host, primary: &str) -> (Value, std::time::Duration) {
    let started = std::time::Instant::now();
    let want = host.conf_file(primary).display().to_string();
    let v = until(&format!("00-multus naming {primary}"), || {
        let first = host
            .conf_names()
            .into_iter()
            .find(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))?;
        let v: Value = serde_json::from_slice(&fs::read(host.conf_file(&first)).ok()?).ok()?;
        let plugin = v.get("plugins").map_or(&v, |p| &p[0]);
        (first.starts_with("00-multus.") && plugin["clusterNetwork"] == want.as_str())
            .then(|| plugin.clone())
    });
    (v, started.elapsed())
}

#[test]
fn the_shipped_watch_container_follows_a_replaced_renamed_or_rewritten_primary() {
    let host = Host::new();
    host.write_primary("10-calico.conflist", FLANNEL);
    // The init container first, with the shipped flags: it generates once and exits.
    let mut init_args = host.args();
    init_args.extend(shipped_install_flags("install").iter().map(Into::into));
    let (status, logs) = Install::spawn(&init_args, &[]).wait_exit();
    assert!(status.success(), "{logs}");
    let (first, _) = wait_clusternetwork(&host, "10-calico.conflist");
    assert_eq!(first["type"], "multus-shim");

    let mut args = host.args();
    args.extend(
        shipped_install_flags("install-watch")
            .iter()
            .map(Into::into),
    );
    let mut watch = Install::spawn(&args, &[]);
    watch.wait_log("watching for changes");

    // Replaced (a new file renamed over it, as installers write): the new capabilities.
    let replaced = FLANNEL.replace(
        r#""bridge": "cni0","#,
        r#""bridge": "cni0", "capabilities": {"ips": true},"#,
    );
    host.write_primary("10-calico.conflist", &replaced);
    let conf = until("the capabilities of the replaced primary", || {
        let v = host.wait_json("00-multus.conf");
        (v["capabilities"].get("ips").is_some()).then_some(v)
    });
    assert_eq!(
        conf["clusterNetwork"],
        host.conf_file("10-calico.conflist").display().to_string()
    );

    // Another primary takes over and the old one is renamed away (Cilium's cni.exclusive):
    // at 1.0.0 the conflist replaces the conf.
    host.write_primary(
        "05-cilium.conflist",
        r#"{"cniVersion": "1.0.0", "name": "cilium", "plugins": [{"type": "cilium-cni"}]}"#,
    );
    fs::rename(
        host.conf_file("10-calico.conflist"),
        host.conf_file("10-calico.conflist.cilium_bak"),
    )
    .unwrap();
    let (_, took_takeover) = wait_clusternetwork(&host, "05-cilium.conflist");
    until("the old .conf to go", || {
        (!host.conf_file("00-multus.conf").exists()).then_some(())
    });

    // Renamed: the cluster network follows the new name.
    fs::rename(
        host.conf_file("05-cilium.conflist"),
        host.conf_file("06-cilium.conflist"),
    )
    .unwrap();
    let (_, took_rename) = wait_clusternetwork(&host, "06-cilium.conflist");

    // Rewritten in place (truncate and write): the new capabilities.
    fs::write(
        host.conf_file("06-cilium.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "cilium", "plugins": [{"type": "cilium-cni"}, {"type": "portmap", "capabilities": {"portMappings": true}}]}"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let list = until("the capabilities of the rewritten primary", || {
        let v = host.wait_json("00-multus.conflist");
        (v["plugins"][0]["capabilities"]
            .get("portMappings")
            .is_some())
        .then_some(v)
    });
    let took_rewrite = started.elapsed();
    assert_eq!(
        list["plugins"][0]["clusterNetwork"],
        host.conf_file("06-cilium.conflist").display().to_string()
    );
    eprintln!(
        "regenerated after: take-over {took_takeover:?}, rename {took_rename:?}, rewrite {took_rewrite:?}"
    );

    // Stopping (a rolling upgrade, a delete of the DaemonSet) leaves the configuration.
    let kept = fs::read(host.conf_file("00-multus.conflist")).unwrap();
    assert!(watch.running());
    let (status, logs) = watch.terminate();
    assert!(status.success(), "{logs}");
    assert_eq!(
        fs::read(host.conf_file("00-multus.conflist")).unwrap(),
        kept
    );
}
