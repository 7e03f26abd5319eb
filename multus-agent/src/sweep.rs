//! Temp files a writer killed mid-write (kill -9, the OOM killer) leaves behind: the engine's
//! cache (`<cniDir>/.<containerID>.tmp<pid>`, and in `results/`) and the attachment records
//! (`<dataplaneStateDir>/attachments/.<id>.json.<pid>.tmp`). Nothing else ever removes them (the
//! cache's are swept by CNI GC only, which needs cniVersion 1.1.0), so the agent sweeps both
//! when it starts and with every reconcile. A file goes when its writer's pid is not running,
//! or when it is older than [`MAX_AGE`]; never while it may still be written.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::info;

use crate::dataplane::record;

/// Older than this, a temp file is left over whatever its pid says (the pid may be reused).
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// Sweeps the cache directory `cni_dir` and the record directory `records`; returns what went.
/// `at_start`: no other agent runs (the socket's lock says so), and only agents write records,
/// so a record temp file of another pid is left over however young it is. Cache temp files
/// have other writers (the shim's DEL fallback, thin mode) and always get their grace.
pub fn temp_files(cni_dir: &Path, records: &Path, at_start: bool) -> Vec<PathBuf> {
    let mut removed = multus_cni::engine::cache::sweep_temp_files(cni_dir, MAX_AGE);
    let grace = if at_start {
        Duration::ZERO
    } else {
        multus_cni::engine::cache::TEMP_FILE_GRACE
    };
    removed.extend(record::sweep_temp_files(records, MAX_AGE, grace));
    for file in &removed {
        info!(file = %file.display(), "removed a temp file left by a killed writer");
    }
    removed
}
