//! Links `multus-cni` as a position-dependent executable: a runtime starts it for every CNI
//! call, and without PIE the loader has no relocations to apply to its read-only data, which
//! took a third of its start-up.
//!
//! The static musl build gets the same from `-C relocation-model=static` (.cargo/config.toml):
//! rustc then links a static non-PIE executable itself, and `-no-pie` here would fight its
//! `-static-pie` default.
//!
//! Records the git commit for `--version` (`MULTUS_GIT_COMMIT`
//! names it where the sources have no `.git`).
#[path = "build/git_commit.rs"]
mod git_commit;

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bin=multus-cni=-no-pie");
    }
    println!("cargo:rerun-if-changed=build/git_commit.rs");
    println!("cargo:rerun-if-env-changed={}", git_commit::COMMIT_ENV);
    let given = std::env::var(git_commit::COMMIT_ENV)
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let commit = match given {
        Some(commit) => commit,
        None => {
            let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
            let (commit, watch) = git_commit::find(Path::new(&dir));
            for path in watch {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            commit
        }
    };
    println!("cargo:rustc-env=MULTUS_BUILD_COMMIT={commit}");
}
