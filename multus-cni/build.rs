//! Links `multus-cni` as a position-dependent executable: a runtime starts it for every CNI
//! call, and without PIE the loader has no relocations to apply to its read-only data, which
//! took a third of its start-up.
fn main() {
    println!("cargo:rustc-link-arg-bin=multus-cni=-no-pie");
}
