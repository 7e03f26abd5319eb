//! `multus-agent uninstall`: takes multus off a node and leaves the node working.
//!
//! In this order, each step best effort and idempotent (a second run finds nothing to do):
//! 1. `00-multus.conf(list)`: the runtime then picks the primary's file again, so a new pod
//!    starts with the cluster network alone instead of failing on a shim with no agent.
//! 2. The shim (`multus-shim`, or `multus` in thin mode) and the kubeconfig files the install
//!    wrote.
//! 3. Every attachment of the dataplane is detached (TCX links unpinned, clsact filters
//!    removed in the pod's namespace), so pods that outlive the agent are no longer policed;
//!    then the pinned maps and the attachment records go.
//!
//! It refuses to run while an agent answers on the socket (`--force` overrides): a running
//! agent or its install sidecar would put everything back. The DEL cache (`cniDir`) stays: a
//! reinstalled agent still finds what pods created before need at DEL.
use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use multus_cni::thick;
use serde_json::Value;

use crate::{
    dataplane::{AttachMode, Dataplane, PinLayout},
    install::generate,
};

/// What to remove.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's CNI configuration directory.
    pub cni_conf_dir: PathBuf,
    /// The host's CNI bin directory.
    pub cni_bin_dir: PathBuf,
    /// Binary names the install put in `cni_bin_dir`.
    pub binaries: Vec<String>,
    /// The kubeconfig the install wrote (its token and CA copies are named from it).
    pub kubeconfig: PathBuf,
    /// The agent's socket directory.
    pub socket_dir: PathBuf,
    /// The dataplane's bpffs directory.
    pub bpffs_dir: PathBuf,
    /// The dataplane's state directory (attachment records).
    pub state_dir: PathBuf,
    /// Go on even when an agent answers on the socket.
    pub force: bool,
}

/// What an uninstall did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files and directories removed.
    pub removed: Vec<PathBuf>,
    /// Attachments detached (id, interface, namespace).
    pub detached: Vec<(u32, String, PathBuf)>,
    /// Things deliberately left in place, and why.
    pub kept: Vec<String>,
    /// What failed.
    pub errors: Vec<String>,
}

impl Report {
    /// Whether nothing was found to remove.
    pub fn nothing_done(&self) -> bool {
        self.removed.is_empty() && self.detached.is_empty()
    }
}

/// Why an uninstall did not start.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    /// An agent serves the socket.
    #[error(
        "an agent is serving {}: delete the multus-agent DaemonSet first (or pass --force)",
        .0.display()
    )]
    AgentRunning(PathBuf),
}

/// Runs the uninstall; failures of single steps are in the report.
pub fn run(opts: &Options) -> Result<Report, UninstallError> {
    let socket = thick::socket_path(&opts.socket_dir);
    if !opts.force && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(UninstallError::AgentRunning(socket));
    }
    let mut report = Report::default();
    remove_configs(opts, &mut report);
    for name in &opts.binaries {
        remove_file(&opts.cni_bin_dir.join(name), &mut report);
    }
    remove_kubeconfig(&opts.kubeconfig, &mut report);
    detach_all(opts, &mut report);
    remove_file(&socket, &mut report);
    remove_empty_dir(&opts.socket_dir, &mut report);
    Ok(report)
}

/// The plugin type of a CNI configuration file (`type`, or the first plugin's).
fn plugin_type(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let top = v
        .get("type")
        .or_else(|| v.get("plugins")?.get(0)?.get("type"));
    top.and_then(Value::as_str).map(str::to_owned)
}

fn remove_configs(opts: &Options, report: &mut Report) {
    for name in [generate::CONF_FILE, generate::CONFLIST_FILE] {
        let path = opts.cni_conf_dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                report
                    .errors
                    .push(format!("reading {}: {e}", path.display()));
                continue;
            }
        };
        match plugin_type(&bytes).as_deref() {
            Some("multus" | "multus-shim") => remove_file(&path, report),
            other => report.kept.push(format!(
                "{}: its plugin type is {other:?}, not multus or multus-shim",
                path.display()
            )),
        }
    }
}

fn remove_kubeconfig(kubeconfig: &Path, report: &mut Report) {
    let stem = kubeconfig
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "multus".into());
    for suffix in [".token", "-ca.crt"] {
        remove_file(
            &kubeconfig.with_file_name(format!("{stem}{suffix}")),
            report,
        );
    }
    remove_file(kubeconfig, report);
    if let Some(dir) = kubeconfig.parent() {
        remove_empty_dir(dir, report);
    }
}

fn detach_all(opts: &Options, report: &mut Report) {
    let layout = PinLayout::new(&opts.bpffs_dir, &opts.state_dir);
    let has_records = fs::read_dir(layout.records())
        .into_iter()
        .flatten()
        .flatten()
        .next()
        .is_some();
    let has_links = fs::read_dir(layout.links())
        .into_iter()
        .flatten()
        .flatten()
        .next()
        .is_some();
    if has_records || has_links {
        // Loading (and adopting) is how clsact filters are found and removed; TCX links would
        // go with their pins, but through the same path their map entries go too.
        match Dataplane::load(layout.clone(), AttachMode::detect()) {
            Ok((mut dataplane, _adoption)) => match dataplane.attachments() {
                Ok(records) => {
                    for r in records {
                        match dataplane.detach(r.id) {
                            Ok(()) => report.detached.push((r.id, r.ifname, r.netns)),
                            Err(e) => report.errors.push(format!("detaching {}: {e}", r.id)),
                        }
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("reading attachment records: {e}")),
            },
            Err(e) => report.errors.push(format!(
                "loading the dataplane to detach (link pins are still removed, which \
                 detaches TCX links; clsact filters stay): {e}"
            )),
        }
    }
    // Unpinning a TCX link nobody else holds detaches it; maps go with their last pin.
    for dir in [layout.links(), layout.maps(), layout.records()] {
        remove_tree(&dir, report);
    }
    remove_empty_dir(&opts.bpffs_dir, report);
    remove_empty_dir(&opts.state_dir, report);
}

fn remove_file(path: &Path, report: &mut Report) {
    match multus_cni::files::remove_if_exists(path) {
        Ok(true) => report.removed.push(path.to_owned()),
        Ok(false) => {}
        Err(e) => report
            .errors
            .push(format!("removing {}: {e}", path.display())),
    }
}

/// Removes `dir` with everything below it, unless it is a mount point (a misconfigured
/// directory must not take another filesystem's content with it).
fn remove_tree(dir: &Path, report: &mut Report) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    let parent_dev = dir
        .parent()
        .and_then(|p| fs::metadata(p).ok())
        .map(|m| m.dev());
    if parent_dev != Some(meta.dev()) {
        report
            .kept
            .push(format!("{}: a mount point, not removed", dir.display()));
        return;
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => report.removed.push(dir.to_owned()),
        Err(e) => report
            .errors
            .push(format!("removing {}: {e}", dir.display())),
    }
}

fn remove_empty_dir(dir: &Path, report: &mut Report) {
    match fs::remove_dir(dir) {
        Ok(()) => report.removed.push(dir.to_owned()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) => {}
        // A mount point (a hostPath volume in the uninstall's pod) cannot go: it is empty.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => report
            .errors
            .push(format!("removing {}: {e}", dir.display())),
    }
}

/// Options of `multus-agent uninstall`; the directories default to what the shipped
/// DaemonSet uses.
#[derive(clap::Args, Debug, Clone)]
pub struct UninstallArgs {
    /// The host's CNI configuration directory, as mounted in this container.
    #[arg(long, env = "CNI_CONF_DIR", default_value = "/host/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The host's CNI bin directory, as mounted in this container.
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Thick mode: remove the `multus-shim` binary (else `multus`, the thin plugin).
    #[arg(long, env = "MULTUS_THICK")]
    pub thick: bool,
    /// The kubeconfig the install wrote [default: <cni-conf-dir>/multus.d/multus.kubeconfig].
    #[arg(long, env = "MULTUS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The agent's configuration, for socketDir, bpffsDir and dataplaneStateDir.
    #[arg(long, env = "MULTUS_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// `socketDir` [default: the configuration's, else /run/multus].
    #[arg(long)]
    pub socket_dir: Option<PathBuf>,
    /// `bpffsDir` [default: the configuration's, else /sys/fs/bpf/multus].
    #[arg(long)]
    pub bpffs_dir: Option<PathBuf>,
    /// `dataplaneStateDir` [default: the configuration's, else /run/multus/dataplane].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Uninstall even though an agent answers on the socket.
    #[arg(long)]
    pub force: bool,
    /// After uninstalling, stay until SIGTERM (a DaemonSet's container must keep running).
    #[arg(long)]
    pub keep_running: bool,
}

impl UninstallArgs {
    /// The options these flags mean.
    pub fn to_options(&self) -> anyhow::Result<Options> {
        let config = match &self.config {
            Some(path) => crate::config::AgentConfig::from_file(path)?,
            None => crate::config::AgentConfig::default(),
        };
        Ok(Options {
            kubeconfig: self
                .kubeconfig
                .clone()
                .unwrap_or_else(|| self.cni_conf_dir.join("multus.d").join("multus.kubeconfig")),
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bin_dir: self.cni_bin_dir.clone(),
            binaries: vec![if self.thick { "multus-shim" } else { "multus" }.to_owned()],
            socket_dir: self.socket_dir.clone().unwrap_or(config.socket_dir),
            bpffs_dir: self.bpffs_dir.clone().unwrap_or(config.bpffs_dir),
            state_dir: self.state_dir.clone().unwrap_or(config.dataplane_state_dir),
            force: self.force,
        })
    }
}

/// `multus-agent uninstall`: prints what it removed; fails when a step failed.
pub fn run_cli(args: &UninstallArgs) -> anyhow::Result<()> {
    let opts = args.to_options()?;
    let report = run(&opts)?;
    for path in &report.removed {
        println!("removed {}", path.display());
    }
    for (id, ifname, netns) in &report.detached {
        println!("detached attachment {id} ({ifname} in {})", netns.display());
    }
    for kept in &report.kept {
        println!("kept {kept}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.nothing_done() && report.errors.is_empty() {
        println!("nothing to remove: multus is not installed on this node");
    }
    if !report.errors.is_empty() {
        anyhow::bail!(
            "uninstall left {} problem(s), listed above",
            report.errors.len()
        );
    }
    println!(
        "done: new pods start with the primary CNI configuration alone ({})",
        opts.cni_conf_dir.display()
    );
    if args.keep_running {
        let mut waker = crate::install::watch::Waker::new(&[], true)?;
        loop {
            if let crate::install::watch::Wake::Stop(_) =
                waker.wait(std::time::Duration::from_secs(3600))?
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(root: &Path) -> Options {
        Options {
            cni_conf_dir: root.join("net.d"),
            cni_bin_dir: root.join("bin"),
            binaries: vec!["multus-shim".into()],
            kubeconfig: root.join("net.d/multus.d/multus.kubeconfig"),
            socket_dir: root.join("run"),
            bpffs_dir: root.join("bpf"),
            state_dir: root.join("run/dataplane"),
            force: false,
        }
    }

    #[test]
    fn removes_what_the_install_wrote_keeps_the_rest_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let o = options(root.path());
        for d in [
            &o.cni_conf_dir,
            &o.cni_bin_dir,
            &o.state_dir.join("attachments"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(o.kubeconfig.parent().unwrap()).unwrap();
        let conflist = o.cni_conf_dir.join("00-multus.conflist");
        fs::write(
            &conflist,
            r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"multus-shim"}]}"#,
        )
        .unwrap();
        // Someone else's 00-multus.conf is not ours to remove.
        let foreign = o.cni_conf_dir.join("00-multus.conf");
        fs::write(
            &foreign,
            r#"{"cniVersion":"0.4.0","name":"x","type":"bridge"}"#,
        )
        .unwrap();
        let primary = o.cni_conf_dir.join("10-primary.conflist");
        fs::write(&primary, "{}").unwrap();
        fs::write(o.cni_bin_dir.join("multus-shim"), "x").unwrap();
        fs::write(o.cni_bin_dir.join("macvlan"), "x").unwrap();
        for f in ["multus.kubeconfig", "multus.token", "multus-ca.crt"] {
            fs::write(o.kubeconfig.with_file_name(f), "x").unwrap();
        }
        fs::write(o.socket_dir.join("multus.sock"), "").unwrap();

        let report = run(&o).unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(!conflist.exists() && foreign.exists() && primary.exists());
        assert!(!o.cni_bin_dir.join("multus-shim").exists());
        assert!(o.cni_bin_dir.join("macvlan").exists());
        assert!(!o.kubeconfig.parent().unwrap().exists());
        assert!(!o.state_dir.exists() && !o.socket_dir.exists());
        assert_eq!(report.kept.len(), 1, "{report:?}");
        assert!(report.kept[0].contains("bridge"), "{report:?}");
        assert!(report.removed.contains(&conflist));

        let again = run(&o).unwrap();
        assert!(again.nothing_done() && again.errors.is_empty(), "{again:?}");
    }

    #[test]
    fn refuses_while_an_agent_answers() {
        let root = tempfile::tempdir().unwrap();
        let o = options(root.path());
        fs::create_dir_all(&o.socket_dir).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(o.socket_dir.join("multus.sock")).unwrap();
        let err = run(&o).unwrap_err().to_string();
        assert!(err.contains("multus.sock"), "{err}");
        let forced = run(&Options { force: true, ..o }).unwrap();
        assert!(forced.errors.is_empty(), "{forced:?}");
    }
}
