//! The on-disk attachment cache, `<cniDir>/<containerID>`: everything DEL needs, written before
//! the first delegate runs (temp file, fsync, rename, directory fsync), so DEL works without the
//! API server, with the NAD gone and with the netns gone.
//!
//! The file is in Multus's scratch format (its JSON list of delegate records, see
//! [`super::multus_cache::scratch::records`]) with this engine's entry embedded in the first
//! record, so Multus's DEL, after a rollback to Multus, tears these pods down too. Entries of
//! the earlier format (the entry as a JSON object) are still read.
//!
//! The delegates' results, known only after ADD, go to `<cniDir>/results/<containerID>`: a full
//! copy of the entry with the results, written without fsync (durability there would double
//! ADD's own cost). DEL and CHECK prefer it when it matches the durable entry; after a crash
//! that lost it, DEL still has every configuration byte it needs (only `prevResult` is missing,
//! which the spec lets plugins do without on DEL).
use std::{
    fs,
    io::Write as _,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    files::{Atomic, remove_if_exists, temp_writer, write_atomic},
};

/// Format marker of this project's cache files.
pub const FORMAT: &str = "multus-rs/v1";

/// One container's cached attachments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// [`FORMAT`].
    pub format: String,
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_NETNS` at ADD time.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` at ADD time (the GC key together with the container id).
    pub ifname: String,
    /// Pod namespace, name and uid from `CNI_ARGS`.
    #[serde(default)]
    pub pod: Option<CachedPod>,
    /// Plugin directories used at ADD time.
    #[serde(default, rename = "pluginDirs")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Whether ADD completed (results recorded).
    #[serde(default)]
    pub complete: bool,
    /// The delegates, cluster network first.
    pub delegates: Vec<CachedDelegate>,
    /// Failed DELs so far, while `retryDeleteOnError` keeps the entry for the runtime's retry.
    #[serde(
        default,
        rename = "delRetries",
        skip_serializing_if = "Option::is_none"
    )]
    pub del_retries: Option<DelRetries>,
}

/// How often, and since when, DEL of an entry has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelRetries {
    /// Failed DELs (the rollback of a failed ADD counts as one).
    pub failures: u64,
    /// When the first one failed, in seconds since the Unix epoch.
    pub since: u64,
}

/// The pod of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    #[serde(default)]
    pub uid: Option<String>,
}

/// One delegate of a cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedDelegate {
    /// Network name (`ns/nad` or configuration name).
    pub network: String,
    /// Interface name in the pod.
    pub ifname: String,
    /// Whether this is the cluster network.
    #[serde(default)]
    pub cluster: bool,
    /// The exact configuration bytes given to the delegate.
    pub config: String,
    /// The runtimeConfig given to the delegate.
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: Map<String, Value>,
    /// The exact `CNI_ARGS` given to the delegate.
    #[serde(rename = "cniArgs")]
    pub cni_args: String,
    /// The delegate's ADD result, once known (passed as prevResult on DEL and CHECK).
    #[serde(default)]
    pub result: Option<Value>,
}

fn results_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    path.parent()
        .map_or_else(|| PathBuf::from("results"), |d| d.join("results"))
        .join(name)
}

/// Reads this engine's cache entry at `path`, with its results when they were recorded;
/// `Ok(None)` when there is none. A Multus entry is an error here: see [`read`].
pub fn load(path: &Path) -> Result<Option<CacheEntry>> {
    let Some(base) = load_file(path)? else {
        return Ok(None);
    };
    let same = |r: &CacheEntry| {
        r.container_id == base.container_id
            && r.delegates.len() == base.delegates.len()
            && r.delegates.iter().zip(&base.delegates).all(|(a, b)| {
                a.network == b.network && a.ifname == b.ifname && a.config == b.config
            })
    };
    match load_file(&results_path(path)) {
        Ok(Some(with_results)) if same(&with_results) => Ok(Some(with_results)),
        Ok(_) => Ok(Some(base)),
        Err(e) => {
            tracing::warn!("ignoring recorded results: {e}");
            Ok(Some(base))
        }
    }
}

/// This engine's entry embedded in a file in Multus's format, if any.
fn embedded(value: &Value) -> Option<&Value> {
    value
        .as_array()?
        .first()?
        .get(super::multus_cache::scratch::OWN_ENTRY_KEY)
}

/// What a cache file holds: this engine's entry, or the scratch cache of a pod Multus set up.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// An entry of this engine (boxed: it is most of the enum's size).
    Own(Box<CacheEntry>),
    /// Multus's scratch cache (a JSON list of its delegate records), parsed as JSON; see
    /// [`super::multus_cache`].
    Multus(Value),
}

/// Reads the cache file at `path` in either format (with recorded results for this engine's);
/// `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<Stored>> {
    let Some(value) = read_json(path)? else {
        return Ok(None);
    };
    if embedded(&value).is_none() && super::multus_cache::scratch::is_scratch(&value) {
        return Ok(Some(Stored::Multus(value)));
    }
    Ok(load(path)?.map(|e| Stored::Own(Box::new(e))))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading the attachment cache", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::decode(format!("the attachment cache {}", path.display()), e))
}

fn load_file(path: &Path) -> Result<Option<CacheEntry>> {
    let Some(value) = read_json(path)? else {
        return Ok(None);
    };
    let what = || format!("the attachment cache {}", path.display());
    let value = match embedded(&value) {
        Some(own) => own.clone(),
        None if super::multus_cache::scratch::is_scratch(&value) => {
            return Err(Error::decode(
                what(),
                "written by Multus (read it with cache::read)",
            ));
        }
        None => value,
    };
    let entry: CacheEntry = serde_json::from_value(value).map_err(|e| Error::decode(what(), e))?;
    if entry.format != FORMAT {
        return Err(Error::decode(
            format!("the attachment cache {}", path.display()),
            format!("unknown format {:?} (expected {FORMAT})", entry.format),
        ));
    }
    Ok(Some(entry))
}

/// Writes `entry` to `path` atomically and durably: a private temp file in the same directory,
/// fsync, rename over `path`, fsync of the directory. Recorded results are dropped.
pub fn store(path: &Path, entry: &CacheEntry) -> Result<()> {
    remove_file(&results_path(path))?;
    write(path, entry, true)
}

/// Records `entry` with its delegates' results next to the durable entry, atomically (temp
/// file and rename) but without fsync.
pub fn store_results(path: &Path, entry: &CacheEntry) -> Result<()> {
    write(&results_path(path), entry, false)
}

fn write(path: &Path, entry: &CacheEntry, durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::config("cniDir", "cache path has no directory"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating the cache directory", dir, e))?;
    let encoded = if durable && !entry.delegates.is_empty() {
        // The durable entry in Multus's format, this engine's entry in the first record.
        let own = serde_json::to_value(entry)
            .map_err(|e| Error::decode("the attachment cache entry", e))?;
        let mut records = super::multus_cache::scratch::records(entry);
        if let Some(Value::Object(first)) = records.first_mut() {
            first.insert(super::multus_cache::scratch::OWN_ENTRY_KEY.to_owned(), own);
        }
        serde_json::to_vec(&records)
    } else {
        serde_json::to_vec(entry)
    };
    let bytes = encoded.map_err(|e| Error::decode("the attachment cache entry", e))?;
    let how = Atomic {
        mode: 0o600,
        durable,
    };
    write_atomic(path, how, |f| f.write_all(&bytes))
        .map_err(|e| Error::io("writing the attachment cache", path, e))
}

/// Removes the cache entry at `path` and its results (missing is fine).
pub fn remove(path: &Path) -> Result<()> {
    remove_file(&results_path(path))?;
    remove_file(path)
}

fn remove_file(path: &Path) -> Result<()> {
    remove_if_exists(path)
        .map(drop)
        .map_err(|e| Error::io("removing the attachment cache", path, e))
}

/// Removes the temp files a process killed mid-write left in `dir` and `dir/results`; returns
/// what it removed. A temp file goes when its writer (the pid in its name,
/// `.<containerID>.tmp-<pid>-<n>`, see [`crate::files`]) is no longer running, or when it is older than `age` whatever its
/// name says (a reused pid). A file younger than [`TEMP_FILE_GRACE`] always stays: its writer may
/// be running in a pid namespace this process cannot see.
pub fn sweep_temp_files(dir: &Path, age: std::time::Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for d in [dir.to_owned(), dir.join("results")] {
        removed.extend(sweep_stale(&d, temp_writer, age, TEMP_FILE_GRACE));
    }
    removed
}

/// Removes the files in `dir` that `pid_of` calls temp files (giving their writer's pid when the
/// name holds one) and [`stale_temp_file`] calls left over; returns what it removed.
pub fn sweep_stale(
    dir: &Path,
    pid_of: impl Fn(&str) -> Option<Option<u32>>,
    age: std::time::Duration,
    grace: std::time::Duration,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = pid_of(&name) else {
            continue;
        };
        let elapsed = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if stale_temp_file(pid, elapsed, age, grace) && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// How old a temp file must be before its writer's pid decides: a write takes milliseconds.
pub const TEMP_FILE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a temp file `elapsed` old whose writer was `pid` is left over: its writer is gone, or
/// it is older than `age`. Never younger than `grace` ([`TEMP_FILE_GRACE`] unless the caller
/// knows every writer it could race with).
pub fn stale_temp_file(
    pid: Option<u32>,
    elapsed: std::time::Duration,
    age: std::time::Duration,
    grace: std::time::Duration,
) -> bool {
    if elapsed < grace {
        return false;
    }
    elapsed >= age || pid.is_some_and(|p| !process_alive(p))
}

/// Whether process `pid` exists (signal 0: a permission error still means it exists).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The container ids with a cache entry in `dir` (temp files skipped).
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing the attachment cache", dir, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn entry() -> CacheEntry {
        CacheEntry {
            format: FORMAT.into(),
            container_id: "c1".into(),
            netns: Some("/var/run/netns/x".into()),
            ifname: "eth0".into(),
            pod: None,
            plugin_dirs: vec!["/usr/lib/cni".into()],
            complete: false,
            delegates: vec![CachedDelegate {
                network: "n".into(),
                ifname: "eth0".into(),
                cluster: true,
                config: r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#.into(),
                runtime_config: Map::new(),
                cni_args: "IgnoreUnknown=1".into(),
                result: None,
            }],
            del_retries: None,
        }
    }

    #[test]
    fn store_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("c1");
        assert_eq!(load(&path).unwrap(), None);
        store(&path, &entry()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(entry()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(list(path.parent().unwrap()).unwrap(), vec!["c1"]);
        // Results are preferred while they match the durable entry.
        let mut done = entry();
        done.complete = true;
        done.delegates[0].result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        store_results(&path, &done).unwrap();
        assert_eq!(load(&path).unwrap(), Some(done.clone()));
        let mut other = done.clone();
        other.delegates[0].ifname = "net9".into();
        store_results(&path, &other).unwrap();
        assert_eq!(load(&path).unwrap(), Some(entry()));
        fs::write(results_path(&path), "garbage").unwrap();
        assert_eq!(load(&path).unwrap(), Some(entry()));
        // A durable rewrite drops them.
        store_results(&path, &done).unwrap();
        store(&path, &entry()).unwrap();
        assert!(!results_path(&path).exists());
        store_results(&path, &done).unwrap();
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!results_path(&path).exists());
        assert_eq!(load(&path).unwrap(), None);
    }

    #[test]
    fn sweeps_only_old_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        fs::create_dir(&results).unwrap();
        let me = std::process::id();
        let old = results.join(format!(".c1.tmp{me}"));
        let fresh = dir.path().join(".c2.tmp43");
        let entry_file = dir.path().join("c3");
        // A writer that is gone (a pid above the kernel's pid_max), a minute ago.
        let orphan = dir.path().join(".c4.tmp4294967295");
        // A running writer (this test), a minute ago: still being written as far as we know.
        let live = dir.path().join(format!(".c5.tmp{me}"));
        for p in [&old, &fresh, &entry_file, &orphan, &live] {
            fs::write(p, "x").unwrap();
        }
        let ago = |secs| std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
        for (p, when) in [
            (&old, ago(3600)),
            (&entry_file, ago(3600)),
            (&orphan, ago(60)),
            (&live, ago(60)),
        ] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let mut removed = sweep_temp_files(dir.path(), std::time::Duration::from_secs(600));
        removed.sort();
        let mut want = vec![old.clone(), orphan.clone()];
        want.sort();
        assert_eq!(removed, want);
        // Fresh files stay even when their writer's pid is not running (43 may not be).
        assert!(fresh.exists() && entry_file.exists() && live.exists());
        assert!(!old.exists() && !orphan.exists());
    }

    #[test]
    fn corrupt_cache_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1");
        fs::write(&path, "{not json").unwrap();
        assert_eq!(load(&path).unwrap_err().code(), 6);
        assert_eq!(read(&path).unwrap_err().code(), 6);
        fs::write(&path, r#"[{"conf": "multus's own format"}]"#).unwrap();
        assert_eq!(load(&path).unwrap_err().code(), 6);
        assert!(matches!(read(&path).unwrap(), Some(Stored::Multus(_))));
        store(&path, &entry()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(Stored::Own(Box::new(entry()))));
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn written_in_multus_format_and_the_old_format_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1");
        let mut two = entry();
        two.delegates.push(CachedDelegate {
            network: "pods/mv".into(),
            ifname: "net1".into(),
            cluster: false,
            config: r#"{"cniVersion":"1.0.0","name":"mv","plugins":[{"type":"macvlan","ipam":{"type":"static","addresses":[]}},{"type":"tuning","capabilities":{"mac":true,"odd":"x"}}]}"#.into(),
            runtime_config: serde_json::json!({"mac": "02:00:00:00:00:01", "ips": ["192.0.2.5/24"]})
                .as_object()
                .unwrap()
                .clone(),
            cni_args: "IgnoreUnknown=1".into(),
            result: None,
        });
        store(&path, &two).unwrap();
        let value: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        // What Multus's DEL reads: one record per delegate, Bytes the exact configuration.
        let records = crate::engine::multus_cache::scratch::parse(&value).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].config, two.delegates[1].config.as_bytes());
        assert_eq!(records[1].ifname_request.as_deref(), Some("net1"));
        assert_eq!(records[0].ifname_request, None);
        assert_eq!(records[1].mac_request.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(records[1].ip_request, ["192.0.2.5/24"]);
        assert_eq!(
            value[1]["ConfList"]["plugins"][1]["capabilities"],
            serde_json::json!({"mac": true})
        );
        assert_eq!(value[0]["Conf"]["type"], "bridge");
        // And this engine reads its own entry back.
        assert_eq!(
            read(&path).unwrap(),
            Some(Stored::Own(Box::new(two.clone())))
        );
        assert_eq!(load(&path).unwrap(), Some(two.clone()));
        // An entry of the earlier format (a JSON object) is still read.
        fs::write(&path, serde_json::to_vec(&two).unwrap()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(Stored::Own(Box::new(two))));
    }
}
