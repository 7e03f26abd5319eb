//! Support for the node install tests: temporary "host" directories and the real
//! `multus-agent install` binary as a child process whose log lines the test can wait for.
#![allow(dead_code, reason = "each test crate uses part of it")]

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub use multus_testkit::{PATIENCE, until};

/// The directories of one fake node, removed with the temp dir.
pub struct Host {
    pub dir: tempfile::TempDir,
    /// The CNI bin directory.
    pub bin: PathBuf,
    /// The CNI configuration directory.
    pub conf: PathBuf,
    /// The service-account directory.
    pub sa: PathBuf,
    /// The multus-cni binary to install (a small script, so the tests can run it).
    pub source: PathBuf,
}

impl Host {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("host/opt/cni/bin");
        let conf = dir.path().join("host/etc/cni/net.d");
        let sa = dir.path().join("serviceaccount");
        for d in [&bin, &conf, &sa] {
            fs::create_dir_all(d).unwrap();
        }
        let source = dir.path().join("multus-cni");
        fs::write(&source, "#!/bin/sh\necho multus-new\n").unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            dir,
            bin,
            conf,
            sa,
            source,
        }
    }

    /// The flags pointing the install at this host; `--poll-interval` short so that a removal
    /// (which inotify reports too) never waits long on the tick either.
    pub fn args(&self) -> Vec<OsString> {
        [
            "--cni-bin-dir".as_ref(),
            self.bin.as_os_str(),
            "--cni-conf-dir".as_ref(),
            self.conf.as_os_str(),
            "--multus-bin-file".as_ref(),
            self.source.as_os_str(),
            "--service-account-dir".as_ref(),
            self.sa.as_os_str(),
            "--poll-interval".as_ref(),
            "200".as_ref(),
        ]
        .iter()
        .map(|s| s.to_os_string())
        .collect()
    }

    /// Writes a primary configuration the way CNI installers usually do (temp + rename).
    pub fn write_primary(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!("{name}.staging"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.conf.join(name)).unwrap();
    }

    /// A file of the configuration directory.
    pub fn conf_file(&self, name: &str) -> PathBuf {
        self.conf.join(name)
    }

    /// The parsed JSON of a configuration file, once it exists.
    #[track_caller]
    pub fn wait_json(&self, name: &str) -> serde_json::Value {
        let path = self.conf_file(name);
        until(&format!("{}", path.display()), || {
            fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        })
    }

    /// File names in the configuration directory, sorted.
    pub fn conf_names(&self) -> Vec<String> {
        names(&self.conf)
    }
}

/// File names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `multus-agent install ...` running as a child; killed on drop if still running.
pub struct Install {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Install {
    /// Starts the real binary with `args` and only `envs` (plus PATH) in its environment.
    pub fn spawn(args: &[OsString], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_multus-agent"));
        cmd.arg("install")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[install] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a log line containing `needle` (after skipping the first `skip` lines).
    #[track_caller]
    pub fn wait_log_after(&self, skip: usize, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                start.elapsed() < PATIENCE,
                "no log line with {needle:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a log line containing `needle`.
    #[track_caller]
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_after(0, needle)
    }

    /// How many lines were logged so far.
    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits for the process to exit; returns its status and all its logs.
    #[track_caller]
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = until("the install to exit", || self.child.try_wait().unwrap());
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.logs())
    }

    /// Sends SIGTERM and waits for the exit.
    #[track_caller]
    pub fn terminate(self) -> (ExitStatus, String) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        self.wait_exit()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `install --once` to completion.
#[track_caller]
pub fn run_once(host: &Host, extra: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut args = host.args();
    args.push("--once".into());
    args.extend(extra.iter().map(OsString::from));
    Install::spawn(&args, envs).wait_exit()
}

/// Kubelet's projected service-account volume: `token -> ..data/token`, `..data -> ..genN`;
/// a rotation swaps `..data` atomically and removes the previous generation.
pub struct ProjectedVolume {
    dir: PathBuf,
    generation: u32,
}

impl ProjectedVolume {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            generation: 0,
        }
    }

    pub fn install(&mut self, token: &str, ca: &[u8]) {
        self.generation += 1;
        let n = self.generation;
        let data = self.dir.join(format!("..gen{n}"));
        fs::create_dir(&data).unwrap();
        fs::write(data.join("token"), token).unwrap();
        fs::write(data.join("ca.crt"), ca).unwrap();
        fs::write(data.join("namespace"), "kube-system").unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..gen{n}"), &tmp).unwrap();
        fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for file in ["token", "ca.crt", "namespace"] {
            let link = self.dir.join(file);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
            }
        }
        if n > 1 {
            fs::remove_dir_all(self.dir.join(format!("..gen{}", n - 1))).unwrap();
        }
    }
}
