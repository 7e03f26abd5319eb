//! What this build is: the crates' version and the git commit it was built from, as
//! `multus-cni --version`, `multus-agent --version` and the agent's `multus_agent_build_info`
//! metric say it.

/// The crates' version (one version for the workspace).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits), or `unknown` when the build had no git information.
pub const COMMIT: &str = env!("MULTUS_BUILD_COMMIT");

/// `VERSION (commit COMMIT)`: what `--version` prints after the program's name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MULTUS_BUILD_COMMIT"),
    ")"
);

#[cfg(test)]
#[path = "../build/git_commit.rs"]
#[allow(dead_code, reason = "the build script uses the rest")]
mod git_commit;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = git_commit::git_in(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn without_git_the_commit_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (commit, watch) = git_commit::find(dir.path());
        assert_eq!(commit, git_commit::UNKNOWN);
        assert!(watch.is_empty());
    }

    #[test]
    fn in_a_repository_the_commit_is_head_and_its_files_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "trunk"]);
        std::fs::write(d.join("f"), "x").unwrap();
        git(d, &["add", "f"]);
        git(
            d,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "commit.gpgsign=false",
                "commit",
                "-q",
                "-m",
                "one",
            ],
        );
        let (commit, watch) = git_commit::find(d);
        assert_eq!(commit, git(d, &["rev-parse", "--short=12", "HEAD"]));
        assert_eq!(commit.len(), 12);
        for file in [".git/HEAD", ".git/refs/heads/trunk"] {
            assert!(
                watch.iter().any(|w| w.ends_with(file)),
                "{file} not in {watch:?}"
            );
        }
    }

    #[test]
    fn the_version_line_names_version_and_commit() {
        assert_eq!(VERSION_LINE, format!("{VERSION} (commit {COMMIT})"));
        assert!(
            COMMIT == git_commit::UNKNOWN || COMMIT.chars().all(|c| c.is_ascii_hexdigit()),
            "{COMMIT}"
        );
    }
}
