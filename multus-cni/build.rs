//! Links `multus-cni` as a position-dependent executable: a runtime starts it for every CNI
//! call, and without PIE the loader has no relocations to apply to its read-only data, which
//! took a third of its start-up.
//!
//! The static musl build gets the same from `-C relocation-model=static` (.cargo/config.toml):
//! rustc then links a static non-PIE executable itself, and `-no-pie` here would fight its
//! `-static-pie` default.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bin=multus-cni=-no-pie");
    }
}
