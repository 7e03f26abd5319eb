//! The git commit a build comes from, for `--version` and the agent's build-info metric. Used
//! by the build script (and by a unit test of the library).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Names the commit when the sources carry no `.git` (an image build from a source archive).
pub const COMMIT_ENV: &str = "MULTUS_GIT_COMMIT";

/// The commit when it cannot be known.
pub const UNKNOWN: &str = "unknown";

/// The commit checked out at `dir` (12 hex digits) and the files whose change means another
/// commit (for cargo's `rerun-if-changed`); [`UNKNOWN`] and no files when `dir` is not in a git
/// work tree or git is missing.
pub fn find(dir: &Path) -> (String, Vec<PathBuf>) {
    let git = |args: &[&str]| -> Option<String> {
        let out = git_in(dir).args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let text = text.trim();
        (out.status.success() && !text.is_empty()).then(|| text.to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .filter(|c| c.len() >= 7 && c.chars().all(|ch| ch.is_ascii_hexdigit()));
    let Some(commit) = commit else {
        return (UNKNOWN.to_owned(), Vec::new());
    };
    // HEAD (per work tree), the branch it points to, and packed-refs (where a branch may live).
    let mut names = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        names.push(branch);
    }
    let watch = names
        .iter()
        .filter_map(|name| git(&["rev-parse", "--git-path", name]))
        .map(|p| dir.join(p))
        .filter(|p| p.exists())
        .collect();
    (commit, watch)
}

/// `git -C dir`, blind to a caller's `GIT_DIR` (it would describe another repository).
pub fn git_in(dir: &Path) -> Command {
    let mut git = Command::new("git");
    git.arg("-C")
        .arg(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    git
}
