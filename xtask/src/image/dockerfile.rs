//! Checks of deploy/Dockerfile that need no Docker engine: it builds with the toolchain and the
//! bpf-linker the project pins, copies every source the workspace needs, builds the packages
//! whose binaries it then copies (bin targets, per `cargo metadata`) statically, and puts them
//! where the DaemonSet runs them and where the installer looks for the binary it copies onto
//! the node; and its run stage holds the same files at the same paths, with the same
//! entrypoint, as the archive `cargo xtask image` writes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    oci,
    prereqs::{BPF_LINKER_VERSION, LLVM_MAJOR, TOOLCHAIN},
    static_build::MUSL_TARGET,
};

/// One instruction: keyword and the rest of its (joined) line.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// One build stage.
#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }
}

fn stages() -> Vec<Stage> {
    let text =
        std::fs::read_to_string(crate::shell::repo_root().join("deploy/Dockerfile")).unwrap();
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in lines {
        let (keyword, args) = line.split_once(' ').unwrap();
        let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
        if keyword == "FROM" {
            let (from, name) = match args.split_once(" AS ") {
                Some((from, name)) => (from.to_owned(), Some(name.to_owned())),
                None => (args.clone(), None),
            };
            stages.push(Stage {
                from,
                name,
                instructions: Vec::new(),
            });
        } else {
            stages.last_mut().unwrap().instructions.push(Instruction {
                keyword: keyword.to_owned(),
                args,
            });
        }
    }
    stages
}

/// `COPY` arguments: options, sources, destination.
fn copy_parts(args: &str) -> (Vec<&str>, Vec<&str>, &str) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let (options, rest): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.starts_with("--"));
    let (dest, sources) = rest.split_last().unwrap();
    (options, sources.to_vec(), dest)
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(crate::shell::repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_image_builds_what_the_daemon_set_runs() {
    let stages = stages();
    let [build, run] = stages.as_slice() else {
        panic!("expected a build stage and a run stage: {stages:?}");
    };
    assert_eq!(build.name.as_deref(), Some("build"));

    // The pinned toolchain, and bpf-linker against its LLVM.
    let image_version = build
        .from
        .rsplit_once(':')
        .and_then(|(_, tag)| tag.split('-').next())
        .unwrap();
    assert_eq!(image_version, TOOLCHAIN, "{}", build.from);
    let toolchain =
        std::fs::read_to_string(crate::shell::repo_root().join("rust-toolchain.toml")).unwrap();
    assert!(toolchain.contains(&format!("channel = \"{TOOLCHAIN}\"")));
    let runs: Vec<&str> = build.all("RUN").collect();
    assert!(
        runs.iter().any(|r| r.contains("cargo install bpf-linker")
            && r.contains(&format!("--version {BPF_LINKER_VERSION}"))
            && r.contains(&format!("--features llvm-{LLVM_MAJOR}"))
            && r.contains(&format!("llvm-{LLVM_MAJOR}/bin"))),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.contains(&format!("llvm-{LLVM_MAJOR}-dev"))),
        "{runs:?}"
    );
    // The static build: the musl target, and musl-gcc for the crates with C parts.
    assert!(runs.iter().any(|r| r.contains("musl-tools")), "{runs:?}");
    assert!(
        runs.iter()
            .any(|r| r.contains(&format!("rustup target add {MUSL_TARGET}"))),
        "{runs:?}"
    );

    // Every source the workspace needs is copied, and exists.
    let meta = metadata();
    let workdir = PathBuf::from(build.all("WORKDIR").last().unwrap());
    let mut copied = Vec::new();
    for args in build.all("COPY") {
        let (_, sources, _) = copy_parts(args);
        for source in sources {
            assert!(
                crate::shell::repo_root().join(source).exists(),
                "COPY {source}: no such path"
            );
            copied.push(PathBuf::from(source));
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", ".cargo"] {
        assert!(
            copied.contains(&PathBuf::from(needed)),
            "{needed} is not copied"
        );
    }
    let root = PathBuf::from(meta["workspace_root"].as_str().unwrap());
    let packages = meta["packages"].as_array().unwrap();
    for package in packages {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        let rel = manifest.strip_prefix(&root).unwrap();
        assert!(
            copied.iter().any(|c| rel.starts_with(c)),
            "{} is not copied into the build",
            rel.display()
        );
    }

    // The release build of the packages whose binaries are copied.
    let build_line = runs
        .iter()
        .find(|r| r.starts_with("cargo build"))
        .expect("a cargo build");
    assert!(build_line.contains("--release") && build_line.contains("--locked"));
    assert!(
        build_line.contains(&format!("--target {MUSL_TARGET}")),
        "{build_line}"
    );
    let words: Vec<&str> = build_line.split_whitespace().collect();
    let built: BTreeSet<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--package" || w[0] == "-p")
        .map(|w| w[1])
        .collect();
    let binaries: BTreeSet<String> = packages
        .iter()
        .filter(|p| built.contains(p["name"].as_str().unwrap()))
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let release = workdir.join("target").join(MUSL_TARGET).join("release");
    let mut installed = BTreeSet::new();
    for args in run.all("COPY") {
        let (options, sources, dest) = copy_parts(args);
        if !options.contains(&"--from=build") {
            for source in sources {
                assert!(
                    crate::shell::repo_root().join(source).exists(),
                    "COPY {source}: no such path"
                );
            }
            continue;
        }
        assert!(
            dest.ends_with('/'),
            "COPY --from=build into a directory: {dest}"
        );
        for source in sources {
            let bin = Path::new(source)
                .strip_prefix(&release)
                .unwrap_or_else(|_| panic!("{source} is not in {}", release.display()));
            let bin = bin.to_str().unwrap();
            assert!(
                binaries.contains(bin),
                "{bin} is not a binary of the packages built ({built:?})"
            );
            installed.insert(Path::new(dest).join(bin));
        }
    }

    // Where the DaemonSet runs them, and where the installer finds multus-cni: next to the
    // running multus-agent.
    let agent = Path::new(
        run.all("ENTRYPOINT")
            .next()
            .unwrap()
            .trim_matches(|c| c == '[' || c == ']' || c == '"'),
    )
    .to_owned();
    assert!(installed.contains(&agent), "{agent:?} not in {installed:?}");
    assert!(installed.contains(&agent.with_file_name("multus-cni")));
    let daemon_set = crate::shell::repo_root().join("deploy/30-daemonset.yaml");
    let docs = multus_testkit::kube::read_yaml_documents(&daemon_set).unwrap();
    let spec = &docs[0]["spec"]["template"]["spec"];
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().unwrap() {
            let command = Path::new(c["command"][0].as_str().unwrap());
            assert!(
                installed.contains(command),
                "{}: {} is not in the image",
                c["name"],
                command.display()
            );
        }
    }

    // The build context leaves the build output out.
    let ignore =
        std::fs::read_to_string(crate::shell::repo_root().join("deploy/Dockerfile.dockerignore"))
            .unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

/// The files the run stage's COPY lines put into the image, by absolute path.
fn run_stage_files(run: &Stage) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for args in run.all("COPY") {
        let (_, sources, dest) = copy_parts(args);
        for source in sources {
            let path = if dest.ends_with('/') {
                let name = Path::new(source).file_name().unwrap().to_str().unwrap();
                format!("{dest}{name}")
            } else {
                dest.to_owned()
            };
            files.insert(path);
        }
    }
    files
}

#[test]
fn dockerfile_copies_what_the_archive_holds() {
    let stages = stages();
    let run = stages.last().unwrap();
    // Nothing below the copied files: the archive has no base image either.
    assert_eq!(run.from, "scratch");
    let (_, written) = super::built();
    let layout = oci::read::layout(&written.path);
    let archive: BTreeSet<String> = layout.files().keys().cloned().collect();
    assert_eq!(
        run_stage_files(run),
        archive,
        "deploy/Dockerfile's COPY lines and `cargo xtask image` disagree"
    );
    let entrypoint: Value = serde_json::from_str(run.all("ENTRYPOINT").last().unwrap()).unwrap();
    assert_eq!(entrypoint, layout.config["config"]["Entrypoint"]);
}
