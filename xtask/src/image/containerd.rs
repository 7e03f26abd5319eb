//! The image in a real containerd: imported with `ctr -n k8s.io images import`, listed under its
//! tag, and run. The containerd is the test's own (root, state, sockets, config and plugin dirs
//! under a temporary directory, no CRI), so it clashes with no other containerd on the machine;
//! it is stopped and its mounts removed on drop, also when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{VERSION, built};

/// A containerd started for one test.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Containerd {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("multus-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let socket = d.join("c.sock");
        let config = crate::containerd_conf::private(d, &socket, false);
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian's containerd package; `cargo xtask setup` installs it)");
        let mut this = Self { child, dir, socket };
        multus_testkit::wait::until("containerd to serve", || {
            if let Ok(Some(status)) = this.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", this.log());
            }
            this.ctr(&["version"]).ok()
        });
        this
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr` against this containerd in the k8s.io namespace (the kubelet's); gives up
    /// after two minutes (a hang would otherwise block the suite).
    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let dir = self.dir.path();
        let (out, err) = (dir.join("ctr.out"), dir.join("ctr.err"));
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .map_err(|e| format!("running ctr: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("ctr {args:?} did not finish in 120 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        if status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "ctr {args:?}: {status}\n{stdout}{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            ))
        }
    }

    /// Runs `command` in a container of `reference`; returns what it printed. Its output goes
    /// to a file (`--log-uri`): then the process gets no stdin, whose end ctr never passes on.
    fn run(&self, reference: &str, id: &str, env: &[&str], command: &[&str]) -> String {
        let log = self.dir.path().join(format!("{id}.log"));
        let uri = format!("file://{}", log.display());
        let mut args = vec![
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--net-host",
            "--log-uri",
            &uri,
        ];
        for e in env {
            args.extend(["--env", e]);
        }
        args.extend([reference, id]);
        args.extend(command);
        if let Err(e) = self.ctr(&args) {
            panic!("{e}\ncontainerd log:\n{}", self.log());
        }
        std::fs::read_to_string(&log).unwrap()
    }

    /// The shims this containerd started (their command line names its socket).
    fn shims(&self) -> Vec<i32> {
        let socket = self.socket.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|&(pid, _)| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim") && c.split('\0').any(|a| a == socket)
                })
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Mount points below this containerd's directory (a task's rootfs, left by a failure).
    fn mounts(&self) -> Vec<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
            .filter(|p| p.starts_with(self.dir.path()))
            .collect()
    }
}

/// Every process: pid and parent pid.
fn processes() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces; the parent pid is the second field after it.
        let ppid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((pid, ppid))
    })
    .collect()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A container left by a failed test: its processes, then its shim.
        for shim in self.shims() {
            for (pid, _) in processes().into_iter().filter(|&(_, ppid)| ppid == shim) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(shim),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for m in self.mounts().iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `ctr images ls` rows: reference and digest.
fn images(ls: &str) -> Vec<(String, String)> {
    ls.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(((*f.first()?).to_owned(), (*f.get(2)?).to_owned()))
        })
        .collect()
}

#[test]
fn image_imports_into_containerd_and_runs() {
    if !multus_testkit::root::require_root("image_imports_into_containerd_and_runs") {
        return;
    }
    let (_, written) = built();
    let containerd = Containerd::start();
    let archive: &Path = &written.path;
    // Unpacking checks each layer against the config's diff IDs; the native snapshotter works on
    // any filesystem.
    containerd
        .ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            archive.to_str().unwrap(),
        ])
        .unwrap();
    let reference = format!("ghcr.io/multus-rs/multus-rs:{VERSION}");
    let ls = containerd.ctr(&["images", "ls"]).unwrap();
    let listed = images(&ls);
    assert!(
        listed.contains(&(reference.clone(), written.digest.clone())),
        "{reference} {} not in `ctr images ls`:\n{ls}",
        written.digest
    );
    let check = containerd
        .ctr(&["images", "check", &format!("name=={reference}")])
        .unwrap();
    assert!(check.contains("complete"), "{check}");

    // The static binaries run in a container holding nothing but the image's files: the shim
    // answers VERSION, the agent (the entrypoint) its help.
    let id = format!("multus-image-test-{}", std::process::id());
    let out = containerd.run(
        &reference,
        &id,
        &["CNI_COMMAND=VERSION"],
        &["/usr/bin/multus-cni"],
    );
    let version: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        version["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "1.0.0"),
        "{out}"
    );
    let out = containerd.run(
        &reference,
        &format!("{id}-agent"),
        &[],
        &["/usr/bin/multus-agent", "--help"],
    );
    assert!(out.contains("install"), "{out}");
}
