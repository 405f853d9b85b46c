//! How `xrat` is linked, which decides what every process pays before `main` (build.rs,
//! src/loader.rs, docs/BENCHMARKS.md "Start-up"): the loader must open only libc, and the
//! binary is not a PIE, so no relative relocations are applied at start. A dependency that
//! brings back libm or libgcc_s, or a build that drops `-no-pie`, fails here, not in a bench.
//! That the statically linked unwinder still unwinds is `cli_polish::closed_stdout_ends_quietly`
//! (a panic caught in `main`; with no unwinder the process would abort).

//!
//! build.rs sets the cfgs `xrat_static_unwinder` and `xrat_no_pie` where it applied each change
//! (linux-gnu, not crt-static; with `XRAT_PIE=1` the binary stays a PIE, and a C compiler
//! without `libgcc_eh.a` keeps libgcc_s). The ELF checks run where they are set; the first test
//! makes sure they are set where they must be.

mod common;

/// On x86_64 linux-gnu with gcc, as on the CI machine, build.rs must apply both changes: if
/// its detection broke, the ELF checks below would silently not run.
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
#[cfg(not(target_feature = "crt-static"))]
#[test]
#[allow(clippy::assertions_on_constants)] // constant by design: it checks the build itself
fn build_rs_applies_its_linkage_here() {
    assert!(
        cfg!(xrat_static_unwinder),
        "build.rs found no libgcc_eh.a (see its warning)"
    );
    if option_env!("XRAT_PIE").is_none_or(|v| v.is_empty() || v == "0") {
        assert!(cfg!(xrat_no_pie), "build.rs did not pass -no-pie");
    }
}

#[cfg(any(xrat_no_pie, xrat_static_unwinder))]
fn readelf(args: &[&str]) -> String {
    let out = std::process::Command::new("readelf")
        .args(args)
        .arg(common::xrat_bin())
        .output()
        .expect("readelf runs; install binutils (apt-get install binutils)");
    assert!(out.status.success(), "readelf {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("readelf prints text")
}

#[cfg(xrat_static_unwinder)]
#[test]
fn xrat_needs_only_libc_from_the_loader() {
    let dynamic = readelf(&["-d"]);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        !needed.is_empty(),
        "no NEEDED entries parsed from:\n{dynamic}"
    );
    for lib in &needed {
        assert!(
            lib.starts_with("libc.so") || lib.starts_with("ld-linux"),
            "xrat needs {lib} (all: {needed:?}); src/loader.rs and build.rs say why it should not"
        );
    }
}

#[cfg(xrat_no_pie)]
#[test]
fn xrat_is_linked_at_a_fixed_address_with_no_relative_relocations() {
    let header = readelf(&["-h"]);
    let kind = header
        .lines()
        .find(|l| l.trim_start().starts_with("Type:"))
        .expect("readelf -h prints the type");
    assert!(
        kind.contains("EXEC"),
        "xrat should be ET_EXEC (build.rs `-no-pie`): {kind}"
    );
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let relocations = readelf(&["-W", "-r"]);
    let relative = relocations
        .lines()
        .filter(|l| l.contains("R_X86_64_RELATIVE"))
        .count();
    assert_eq!(
        relative, 0,
        "relative relocations the loader must apply at every start"
    );
}
