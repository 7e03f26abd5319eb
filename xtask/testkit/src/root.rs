//! Root checks that fail loudly instead of letting a test pass by doing nothing.

/// The variable that lets root tests skip (loudly) when not run as root.
pub const ALLOW_SKIP_VAR: &str = "MULTUS_TEST_ALLOW_SKIP";

/// Returns `true` when the caller is root and the test should run.
///
/// Without root the test fails with a message saying why, unless `MULTUS_TEST_ALLOW_SKIP=1` is
/// set: then it prints a SKIPPED line and returns `false`.
#[track_caller]
pub fn require_root(test: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    if std::env::var(ALLOW_SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: needs root (network namespaces, eBPF); {ALLOW_SKIP_VAR}=1 set");
        return false;
    }
    panic!(
        "{test} needs root (it creates network namespaces and loads eBPF programs); run it as \
         root, or set {ALLOW_SKIP_VAR}=1 to skip root tests explicitly"
    );
}

fn nix_is_root() -> bool {
    // The effective uid is what the kernel checks for CAP_NET_ADMIN/CAP_BPF in the init userns.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
