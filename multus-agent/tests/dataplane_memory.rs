//! Root tests of the maps' memory: map memory is charged to the memory cgroup of the process
//! that creates the maps (the agent's, limited to 256 MiB by the DaemonSet), so the maps are
//! sized from the node. Each load runs in a child process (this test binary again) placed in a
//! memory cgroup of its own with a limit, on a bpffs directory of its own, so the maps are
//! created (not reused) and charged there.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use common::Dirs;
use multus_agent::dataplane::{AttachMode, Dataplane, MapSizing, PinLayout};
use multus_testkit::require_root;

const MIB: u64 = 1 << 20;
/// The agent container's memory limit in deploy/30-daemonset.yaml.
const DAEMONSET_LIMIT: u64 = 256 * MIB;

/// The child's orders: where to pin, and the sizing to load with.
const CHILD_ENV: &str = "MULTUS_TEST_MEMORY_CHILD";

/// Not a test of its own: the body of the child process the tests below start (it does
/// nothing when run directly).
#[test]
fn memory_child() {
    let Ok(orders) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = orders.split('\n');
    let (bpffs, state, ids, flows) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    );
    let sizing = MapSizing {
        max_attachments: ids,
        flows_per_attachment: flows,
    };
    match Dataplane::load_sized(PinLayout::new(bpffs, state), AttachMode::Tcx, sizing) {
        Ok(_) => println!("MEMORY-CHILD loaded"),
        Err(e) => {
            println!("MEMORY-CHILD failed: {e}");
            std::process::exit(3);
        }
    }
}

/// The full name of [`memory_child`] in this test binary (its module path without the crate).
fn child_test_name() -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::memory_child"),
        None => "memory_child".to_owned(),
    }
}

/// A memory cgroup of this test with a limit, removed on drop. cgroup v2 where the memory
/// controller is there, else v1's memory hierarchy.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn new(limit: u64) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "multus-mem-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2_controllers = fs::read_to_string(v2_root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory");
        let (parent, v2) = if v2_controllers {
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            (v2_root.join(path.trim_start_matches('/')), true)
        } else {
            let path = own
                .lines()
                .find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == "memory")
                        .then_some(path)
                })
                .expect("no memory controller, neither cgroup v2 nor v1");
            (
                v2_root.join("memory").join(path.trim_start_matches('/')),
                false,
            )
        };
        let dir = parent.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let cgroup = Self { dir, v2 };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::write(cgroup.dir.join(file), limit.to_string()).unwrap();
        if v2 {
            // No swap to spill into: the limit is the limit.
            let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
        }
        cgroup
    }

    /// The most the cgroup was charged.
    fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(self.dir.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Runs the child load in this cgroup; its exit status and output.
    fn load(&self, sizing: MapSizing) -> (bool, String) {
        let dirs = Dirs::new();
        let orders = format!(
            "{}\n{}\n{}\n{}",
            dirs.bpffs.path().display(),
            dirs.state.path().display(),
            sizing.max_attachments,
            sizing.flows_per_attachment
        );
        let procs = self.dir.join("cgroup.procs");
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                child_test_name().as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, orders);
        // SAFETY: between fork and exec, only a write(2) of a fixed buffer to an open file:
        // "0" moves the writing process, the child, into the cgroup before it runs anything.
        let procs_file = fs::OpenOptions::new().write(true).open(&procs).unwrap();
        unsafe {
            command.pre_exec(move || {
                use std::io::Write as _;
                (&procs_file).write_all(b"0")
            });
        }
        let out = command.output().unwrap();
        let text = format!(
            "{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.success() && text.contains("MEMORY-CHILD loaded"),
            text,
        )
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The child has exited; its charges move to the parent when the group goes.
        let _ = fs::remove_dir(&self.dir);
    }
}

fn possible_cpus() -> u32 {
    aya::util::nr_cpus().unwrap().get()
}

#[test]
fn the_default_sizing_loads_under_the_daemonsets_memory_limit() {
    if !require_root("the_default_sizing_loads_under_the_daemonsets_memory_limit") {
        return;
    }
    let sizing = MapSizing::default();
    let cgroup = MemoryCgroup::new(DAEMONSET_LIMIT);
    let (ok, out) = cgroup.load(sizing);
    assert!(
        ok,
        "loading under {} MiB failed:\n{out}",
        DAEMONSET_LIMIT / MIB
    );
    let model = sizing.memory(possible_cpus());
    let peak = cgroup.peak();
    println!(
        "default sizing {sizing:?} on {} possible CPUs: model {model:?}, cgroup peak {} KiB",
        possible_cpus(),
        peak / 1024
    );
    // The maps created up front are charged to the loading process's cgroup: the peak holds
    // at least what the model says they take.
    assert!(
        peak >= model.shared,
        "peak {peak} below the model's shared maps {}",
        model.shared
    );
}

#[test]
fn the_old_fixed_sizing_needs_memory_the_node_sized_maps_do_not() {
    if !require_root("the_old_fixed_sizing_needs_memory_the_node_sized_maps_do_not") {
        return;
    }
    // How much the node-sized load takes here, with room to spare ...
    let sized = MapSizing::default();
    let probe = MemoryCgroup::new(DAEMONSET_LIMIT);
    let (ok, out) = probe.load(sized);
    assert!(ok, "{out}");
    let cpus = possible_cpus();
    let extra = MapSizing::declared().memory(cpus).shared - sized.memory(cpus).shared;
    // ... then a limit with a third of what the fixed sizing needs on top: the node-sized maps
    // load under it, the maps sized for 16,384 attachments do not.
    let limit = probe.peak() + extra / 3;
    drop(probe);
    let (ok, out) = MemoryCgroup::new(limit).load(sized);
    assert!(ok, "node-sized maps under {} KiB:\n{out}", limit / 1024);
    let (ok, out) = MemoryCgroup::new(limit).load(MapSizing::declared());
    assert!(
        !ok,
        "maps for 16,384 attachments loaded under {} KiB, {} KiB short of what they need:\n{out}",
        limit / 1024,
        extra / 1024
    );
    println!(
        "under {} KiB: node-sized maps load, the fixed sizing ({} KiB more) fails:\n{out}",
        limit / 1024,
        extra / 1024
    );
}
