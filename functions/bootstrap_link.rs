//! Every function's build script: links its bootstrap as a position-dependent executable, as Go
//! builds its Lambda bootstraps. A PIE carries a dynamic relocation (24 bytes on x86_64 and
//! arm64) for every pointer in its static data: about 0.7 MB of a bootstrap, and work for the
//! loader at every cold start. What it gives up: the bootstrap's own code and data load at a
//! fixed address (its stack, heap and shared libraries stay randomised).
fn main() {
    println!("cargo:rerun-if-changed=../bootstrap_link.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
