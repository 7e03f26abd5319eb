//! Rebuild the eBPF object when bpf-linker changes: aya-build runs cargo inside cargo, so cargo
//! cannot see the linker as an input by itself.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found on PATH: {err}"),
    }
}
