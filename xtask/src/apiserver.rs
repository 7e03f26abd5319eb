//! The real kube-apiserver the Kubernetes tests run against, built once from Debian's
//! `kubernetes` source package (no registry ships a current binary) and cached outside the tree.
//!
//! Steps (idempotent; a cached binary that reports the right version skips all of them):
//! a private apt sources list with deb-src lines, `apt-get source --download-only kubernetes`,
//! unpack, swap the vendored reflect2 1.0.1 (crashes under Go >= 1.18) for Debian's 1.0.2, and
//! `make WHAT=cmd/kube-apiserver` offline against the vendor tree.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use multus_testkit::cache::{APISERVER_VERSION as VERSION, cache_dir, cached_apiserver};

use crate::shell::{Cmd, is_root, note, step};

/// Debian packages the build and the test cluster need.
const PACKAGES: &[&str] = &[
    "golang-go",
    "golang-github-modern-go-reflect2-dev",
    "dpkg-dev",
    "make",
    "rsync",
    // The test cluster: etcd, and openssl for its service-account signing key.
    "etcd-server",
    "openssl",
];
const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

fn binary_ok(path: &Path) -> bool {
    Cmd::new(&path.to_string_lossy())
        .args(["--version"])
        .probe()
        .is_some_and(|v| v.trim() == format!("Kubernetes {VERSION}"))
}

/// Makes sure the cached kube-apiserver exists (building it on the first run) and returns its path.
pub fn ensure() -> anyhow::Result<PathBuf> {
    step("kube-apiserver for the Kubernetes tests");
    let bin = cached_apiserver();
    let dir = bin
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{} has no parent", bin.display()))?;
    crate::prereqs::ensure_debian_packages(PACKAGES)?;
    if binary_ok(&bin) {
        note(&format!("cached: {}", bin.display()));
        return Ok(bin);
    }
    if !is_root() {
        bail!("building kube-apiserver needs root (apt-get); run `cargo xtask test` as root");
    }
    note(&format!(
        "building kube-apiserver {VERSION} from Debian's kubernetes source package \
         (first run only, about 6-10 minutes on 2 cores)"
    ));
    let started = Instant::now();
    let work = cache_dir().join("build-kubernetes");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = fetch_source(&work)?;
    replace_reflect2(&tree)?;
    make(&tree, &work)?;
    let built = tree.join("_output/local/go/bin/kube-apiserver");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join("kube-apiserver.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &bin).with_context(|| format!("installing {}", bin.display()))?;
    if !binary_ok(&bin) {
        bail!("{} does not report Kubernetes {VERSION}", bin.display());
    }
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    note(&format!(
        "built {} in {:.0?} (cached for later runs)",
        bin.display(),
        started.elapsed()
    ));
    Ok(bin)
}

/// Downloads and unpacks the source package with a private apt configuration (the machine's
/// sources have no deb-src lines; /etc/apt stays untouched). Returns the unpacked tree.
fn fetch_source(work: &Path) -> anyhow::Result<PathBuf> {
    let apt = work.join("apt");
    let lists = apt.join("lists");
    let cache = apt.join("cache");
    std::fs::create_dir_all(lists.join("partial"))?;
    std::fs::create_dir_all(cache.join("archives/partial"))?;
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        "deb-src http://deb.debian.org/debian bookworm main\n\
         deb-src http://deb.debian.org/debian-security bookworm-security main\n",
    )
    .with_context(|| format!("writing {}", sources.display()))?;
    let opts = [
        format!("-oDir::Etc::SourceList={}", sources.display()),
        "-oDir::Etc::SourceParts=/nonexistent".to_owned(),
        format!("-oDir::State::Lists={}", lists.display()),
        format!("-oDir::Cache={}", cache.display()),
        // The private dirs belong to root; apt's download sandbox user could not write them.
        "-oAPT::Sandbox::User=root".to_owned(),
    ];
    Cmd::new("apt-get")
        .args(&opts)
        .args(["update", "-q"])
        .run()?;
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    Cmd::new("sh")
        .args([
            "-c",
            &format!(
                "cd '{}' && apt-get {} source --download-only kubernetes && \
                 dpkg-source --no-check -x kubernetes_*.dsc tree",
                src.display(),
                opts.join(" ")
            ),
        ])
        .run()?;
    Ok(src.join("tree"))
}

fn replace_reflect2(tree: &Path) -> anyhow::Result<()> {
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    if !vendored.is_dir() {
        bail!("{} is missing from the source package", vendored.display());
    }
    std::fs::remove_dir_all(&vendored)?;
    Cmd::new("cp")
        .args(["-r", REFLECT2_DEBIAN])
        .args([&vendored])
        .run()
}

fn make(tree: &Path, work: &Path) -> anyhow::Result<()> {
    let home = work.join("home");
    std::fs::create_dir_all(&home)?;
    Cmd::new("make")
        .args(["-C"])
        .args([tree])
        .args(["WHAT=cmd/kube-apiserver"])
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=vendor")
        .env("KUBE_GIT_VERSION", VERSION)
        .env("KUBE_GIT_TREE_STATE", "clean")
        .env("HOME", &home)
        .env("GOCACHE", work.join("gocache"))
        .run()
}
