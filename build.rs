//! Makes each `xrat` process cheaper to start (src/loader.rs, docs/BENCHMARKS.md "Start-up"),
//! since scripts run one per call:
//! - The unwinder is linked statically (`libgcc_eh.a`, what `gcc -static-libgcc` does), so the
//!   loader need not open libgcc_s.so.1. Where the C compiler has no `libgcc_eh.a` (a
//!   clang-only toolchain, say), the build keeps the shared unwinder and says so.
//! - The `xrat` binary is linked at a fixed address (`-no-pie`), so the loader applies none of
//!   its ~10,000 relative relocations and dirties none of the ~46 pages they touch. The cost is
//!   ASLR for the binary's own image (libraries, stack, heap and mmaps stay randomized), which
//!   is how the Go-built cores xrat runs (Xray, V2Ray, sing-box, mihomo) ship. `XRAT_PIE=1` at
//!   build time keeps a PIE. `xrat-api`, the HTTP server, stays a PIE: its start-up is paid once.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=XRAT_PIE");
    let target = std::env::var("TARGET").unwrap_or_default();
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|f| f == "crt-static"));
    // A static build links libgcc_eh already; other targets have their own unwinders.
    if crt_static || !target.ends_with("-linux-gnu") {
        return;
    }
    if std::env::var_os("XRAT_PIE").is_none_or(|v| v.is_empty() || v == "0") {
        println!("cargo:rustc-link-arg-bin=xrat=-no-pie");
    }
    match static_unwinder() {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
        }
        None => println!(
            "cargo:warning=no libgcc_eh.a from the C compiler; xrat will need libgcc_s.so.1"
        ),
    }
}

/// The directory of the C compiler's `libgcc_eh.a`, if it has one.
fn static_unwinder() -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
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
