//! Makes each `xrat` process cheaper to start (src/loader.rs, docs/BENCHMARKS.md "Start-up"),
//! since scripts run one per call:
//! - The unwinder is linked statically (`libgcc_eh.a`, what `gcc -static-libgcc` does), so the
//!   loader need not open libgcc_s.so.1. Where the C compiler has no `libgcc_eh.a` (a
//!   clang-only toolchain, say), the build keeps the shared unwinder and says so.
//! - The `xrat` binary is linked at a fixed address (`-no-pie`), so the loader applies none of
//!   its ~10,000 relative relocations and dirties none of the ~46 pages they touch. The cost is
//!   ASLR for the binary's own image (libraries, stack, heap and mmaps stay randomized), and
//!   the daemon (`xrat daemon run-server`, the same binary) pays it too. `XRAT_PIE=1` at build
//!   time keeps a PIE (docs/INSTALL.md says when to choose it). `xrat-api`, the HTTP server,
//!   stays a PIE: its start-up is paid once.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=XRAT_PIE");
    // For tests/linkage.rs: which of the two is in force in this build.
    println!("cargo:rustc-check-cfg=cfg(xrat_no_pie, xrat_static_unwinder)");
    let env = |key| std::env::var(key).unwrap_or_default();
    let crt_static = env("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    // A static build links libgcc_eh already; other systems have their own unwinders.
    if crt_static || env("CARGO_CFG_TARGET_OS") != "linux" || env("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    if !pie_wanted() {
        println!("cargo:rustc-link-arg-bin=xrat=-no-pie");
        println!("cargo:rustc-cfg=xrat_no_pie");
    }
    match static_unwinder() {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
            println!("cargo:rustc-cfg=xrat_static_unwinder");
        }
        None => println!(
            "cargo:warning=no libgcc_eh.a from the C compiler; xrat will need libgcc_s.so.1"
        ),
    }
}

/// `XRAT_PIE=1` (any value but empty or 0) keeps `xrat` a PIE.
fn pie_wanted() -> bool {
    std::env::var_os("XRAT_PIE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The directory of the target C compiler's `libgcc_eh.a`, if it has one.
fn static_unwinder() -> Option<PathBuf> {
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .try_get_compiler()
        .ok()?;
    let out = compiler
        .to_command()
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without the file, gcc prints the bare name back.
    path.is_absolute()
        .then_some(path)
        .filter(|p| p.is_file())
        .and_then(|p| p.parent().map(PathBuf::from))
}
