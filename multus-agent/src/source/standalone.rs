//! Standalone mode (no cluster): NADs and pods' network selections come from a local directory,
//! read by multus-cni's local-files source (the same files and rules as thin mode's
//! `localSourceDir`). Lookups always see the directory as it is; the agent also watches it with
//! inotify, so a file that stops parsing is reported when it is written rather than at the next
//! ADD, and so changes are published to whoever reacts to them.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use multus_cni::{
    NetConf,
    cni::Request,
    engine::{AddOutput, Publisher},
    network::{LocalFiles, NetworkSource, PodKey},
};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};
use tracing::{info, warn};

use super::AgentSource;
use crate::metrics::AgentMetrics;

/// Changes closer together than this are handled as one.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Logs network-status and the Warnings: without a cluster there is no pod object to write
/// them to.
#[derive(Debug)]
struct LogStatus;

impl Publisher for LogStatus {
    fn added(&self, request: &Request, _conf: &NetConf, output: &AddOutput) {
        let Some((namespace, name)) = request.args.pod() else {
            return;
        };
        let json = serde_json::to_string(&output.network_status).unwrap_or_default();
        info!(pod = %format!("{namespace}/{name}"), network_status = %json, "network-status");
        for warning in &output.warnings {
            warn!(pod = %format!("{namespace}/{name}"), "{warning}");
        }
    }

    fn warning(&self, pod: &PodKey, reason: &'static str, message: &str) {
        warn!(pod = %format!("{}/{}", pod.namespace, pod.name), reason, "{message}");
    }
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Parses every file of the directory: a lookup that cannot match reads them all, and the
/// source names the files that do not parse.
fn probe(files: &LocalFiles) -> Result<(), String> {
    files
        .network("\0probe", "\0probe")
        .map(drop)
        .map_err(|e| e.to_string())
}

fn report(files: &LocalFiles, metrics: &AgentMetrics) {
    match probe(files) {
        Ok(()) => info!(dir = %files.dir().display(), "local source reloaded"),
        Err(e) => {
            metrics.error("source");
            warn!(dir = %files.dir().display(), "local source has files that do not parse: {e}");
        }
    }
}

/// Watches `dir` (creating it when missing) and returns the source over it.
pub fn start(dir: &Path, metrics: &AgentMetrics) -> io::Result<AgentSource> {
    std::fs::create_dir_all(dir)?;
    let files = LocalFiles::new(dir);
    report(&files, metrics);
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF,
    )?;
    // SAFETY: the descriptor is the inotify instance's own, owned by the value handed over; it
    // stays open and unchanged until the `AsyncFd` drops it.
    let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
        .map_err(io::Error::from)?;
    let (changes_tx, changes) = watch::channel(0u64);
    let (_synced_tx, synced) = watch::channel(true);
    metrics.cache_synced("local", true);
    let task_files = files.clone();
    let task_metrics = metrics.clone();
    let path: PathBuf = dir.to_owned();
    tokio::spawn(async move {
        loop {
            match drain(&fd).await {
                Ok(()) => {}
                Err(e) => {
                    task_metrics.error("source");
                    warn!(dir = %path.display(), "watching the local source stopped: {e}");
                    return;
                }
            }
            tokio::time::sleep(DEBOUNCE).await;
            // Whatever arrived during the pause belongs to the same change.
            let _ = fd.get_ref().0.read_events();
            task_metrics.source_event("local");
            report(&task_files, &task_metrics);
            changes_tx.send_modify(|g| *g += 1);
        }
    });
    Ok(AgentSource {
        network: Arc::new(files) as Arc<dyn NetworkSource>,
        publisher: Arc::new(LogStatus),
        placement: None,
        synced,
        changes,
    })
}

/// Waits for inotify events and reads them.
async fn drain(fd: &AsyncFd<InotifyFd>) -> io::Result<()> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| inner.get_ref().0.read_events().map_err(io::Error::from)) {
            Ok(Ok(events)) if !events.is_empty() => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_changes_and_reads_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = AgentMetrics::default();
        let mut source = start(dir.path(), &metrics).unwrap();
        assert!(*source.synced.borrow());
        assert!(source.network.network("ns", "a").unwrap().is_none());
        std::fs::write(
            dir.path().join("a.yaml"),
            "kind: NetworkAttachmentDefinition\nmetadata: {name: a, namespace: ns}\n\
             spec: {config: '{}'}\n",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), source.changes.changed())
            .await
            .expect("a change within 5 s")
            .unwrap();
        assert!(source.network.network("ns", "a").unwrap().is_some());
        assert!(probe(&LocalFiles::new(dir.path())).is_ok());
        std::fs::write(dir.path().join("b.yaml"), "kind: [").unwrap();
        let err = probe(&LocalFiles::new(dir.path())).unwrap_err();
        assert!(err.contains("b.yaml"), "{err}");
    }
}
