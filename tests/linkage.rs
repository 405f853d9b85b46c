//! How `xrat` is linked, which decides what every process pays before `main` (build.rs,
//! src/loader.rs, docs/BENCHMARKS.md "Start-up"): the loader must open only libc, and the
//! binary is not a PIE, so no relative relocations are applied at start. A dependency that
//! brings back libm or libgcc_s, or a build that drops `-no-pie`, fails here, not in a bench.
//! That the statically linked unwinder still unwinds is `cli_polish::closed_stdout_ends_quietly`
//! (a panic caught in `main`; with no unwinder the process would abort).

use std::process::Command;

mod common;

fn readelf(args: &[&str]) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(common::xrat_bin())
        .output()
        .expect("readelf runs; install binutils (apt-get install binutils)");
    assert!(out.status.success(), "readelf {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("readelf prints text")
}

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
