//! Tests of settings parsing and bounds.
use super::*;

#[test]
fn core_choice_and_preference() {
    let s = parse("[runtime]\ncore = \"mihomo\"\n").unwrap();
    assert_eq!(s.runtime.core, CoreChoice::Mihomo);
    assert_eq!(
        s.runtime.core_preference,
        [
            CoreName::Xray,
            CoreName::SingBox,
            CoreName::Mihomo,
            CoreName::V2ray
        ]
    );
    let s = parse("[runtime]\ncore_preference = [\"mihomo\", \"v2ray\"]\n").unwrap();
    assert_eq!(
        s.runtime.core_preference,
        [CoreName::Mihomo, CoreName::V2ray]
    );
    let err = parse("[runtime]\ncore_preference = [\"mihomo\", \"clash\"]\n").unwrap_err();
    assert!(
        err.starts_with("invalid settings in /r/config.toml: "),
        "{err}"
    );
    assert!(err.contains("core_preference"), "{err}");
    assert!(
        err.contains(
            "unknown variant `clash`, expected one of `xray`, `v2ray`, `sing-box`, `mihomo`"
        ),
        "{err}"
    );
    assert_eq!(
        parse("[runtime]\ncore_preference = []\n").unwrap_err(),
        "invalid settings in /r/config.toml: `runtime.core_preference` = []: must name at \
         least one of xray, sing-box, mihomo, v2ray"
    );
    assert_eq!(
        parse("[runtime]\ncore_preference = [\"xray\", \"mihomo\", \"xray\"]\n").unwrap_err(),
        "invalid settings in /r/config.toml: `runtime.core_preference` = [\"xray\", \
         \"mihomo\", \"xray\"]: names a core twice; list each of xray, sing-box, mihomo, \
         v2ray at most once"
    );
}

fn parse(text: &str) -> Result<Settings, String> {
    Settings::parse(text, Path::new("/r/config.toml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(parse("").unwrap(), Settings::default());
    let s = parse("[runtime.rotation]\nenabled = true\n").unwrap();
    assert!(s.runtime.rotation.enabled);
    assert_eq!(s.runtime.rotation.interval_secs, 1800);
    assert_eq!(s.daemon.health_interval_secs, 15);
}

#[test]
fn unknown_keys_are_named_with_the_file() {
    let err = parse("[daemon]\nhealth_interval = 3\n").unwrap_err();
    assert!(err.contains("/r/config.toml"), "{err}");
    assert!(err.contains("unknown field `health_interval`"), "{err}");
}

#[test]
fn bad_values_name_key_and_value() {
    let err = parse("[runtime]\nsocks_port = 70000\n").unwrap_err();
    assert!(err.contains("socks_port") && err.contains("70000"), "{err}");
    let err = parse("[runtime]\ncore = \"clash\"\n").unwrap_err();
    assert!(err.contains("clash") && err.contains("sing-box"), "{err}");
    let err = parse("[runtime]\ncore = \"clash\"\n").unwrap_err();
    assert!(err.contains("mihomo"), "{err}");
    let err = parse("[daemon]\nhealth_interval_secs = 0\n").unwrap_err();
    assert_eq!(
        err,
        "invalid settings in /r/config.toml: `daemon.health_interval_secs` = 0: must be between 1 and 31622400 seconds (366 days)"
    );
}

/// Periods are turned into milliseconds and added to the clock: a huge one used to wrap
/// (18446744073709552 s ticked every 384 ms).
#[test]
fn periods_and_timeouts_are_bounded() {
    let cases = [
        (
            "[daemon]\nhealth_interval_secs = 18446744073709552\n",
            "daemon.health_interval_secs",
        ),
        (
            "[runtime.rotation]\ninterval_secs = 31622401\n",
            "runtime.rotation.interval_secs",
        ),
        (
            "[runtime.rotation]\ncooldown_secs = 31622401\n",
            "runtime.rotation.cooldown_secs",
        ),
        (
            "[runtime.rotation]\ntest_concurrency = 257\n",
            "runtime.rotation.test_concurrency",
        ),
        (
            "[runtime]\nready_timeout_ms = 600001\n",
            "runtime.ready_timeout_ms",
        ),
        ("[health]\ntimeout_ms = 600001\n", "health.timeout_ms"),
    ];
    for (text, key) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }
    let top = parse(
        "[daemon]\nhealth_interval_secs = 31622400\n[runtime.rotation]\ncooldown_secs = 31622400\n",
    )
    .unwrap();
    assert_eq!(top.daemon.health_interval_secs, DURATION_SECS_MAX);
}

#[test]
fn api_header_timeout_is_bounded() {
    assert_eq!(parse("").unwrap().api.header_timeout_ms, 5000);
    let s = parse("[api]\nheader_timeout_ms = 250\n").unwrap();
    assert_eq!(s.api.header_timeout_ms, 250);
    assert_eq!(
        parse("[api]\nheader_timeout_ms = 600000\n")
            .unwrap()
            .api
            .header_timeout_ms,
        API_HEADER_TIMEOUT_MS_MAX
    );
    for bad in ["0", "600001", "18446744073709551615"] {
        let err = parse(&format!("[api]\nheader_timeout_ms = {bad}\n")).unwrap_err();
        assert!(err.contains("/r/config.toml"), "{err}");
        assert!(err.contains("header_timeout_ms"), "{err}");
    }
    let err = parse("[api]\nheader_timeout_ms = 0\n").unwrap_err();
    assert_eq!(
        err,
        "invalid settings in /r/config.toml: `api.header_timeout_ms` = 0: must be between 1 and 600000 (10 minutes)"
    );
    let err = parse("[api]\nheader_timeout = 5\n").unwrap_err();
    assert!(err.contains("unknown field `header_timeout`"), "{err}");
}

#[test]
fn daemon_backend_defaults_to_auto_and_names_its_values() {
    assert_eq!(parse("").unwrap().daemon.backend, BackendChoice::Auto);
    for (text, want) in [
        ("auto", BackendChoice::Auto),
        ("io_uring", BackendChoice::IoUring),
        ("epoll", BackendChoice::Epoll),
    ] {
        let s = parse(&format!("[daemon]\nbackend = \"{text}\"\n")).unwrap();
        assert_eq!(s.daemon.backend, want);
        assert_eq!(BackendChoice::parse(text), Some(want));
        assert_eq!(want.as_str(), text);
        assert!(BackendChoice::ALLOWED.contains(&text));
    }
    let err = parse("[daemon]\nbackend = \"kqueue\"\n").unwrap_err();
    assert!(err.contains("backend = \"kqueue\""), "{err}");
    assert!(
        err.contains("`auto`, `io_uring`, `epoll`"),
        "the allowed values: {err}"
    );
    assert_eq!(BackendChoice::parse("uring"), None);
}

#[test]
fn core_sessions_kept_is_bounded() {
    assert_eq!(parse("").unwrap().logs.core_sessions_kept, 10);
    let s = parse("[logs]\ncore_sessions_kept = 10000\n").unwrap();
    assert_eq!(s.logs.core_sessions_kept, 10_000);
    for bad in [0, 10_001] {
        let err = parse(&format!("[logs]\ncore_sessions_kept = {bad}\n")).unwrap_err();
        assert!(err.contains("`logs.core_sessions_kept` = "), "{err}");
        assert!(err.contains("between 1 and 10000"), "{err}");
    }
}

#[test]
fn strikes_and_quarantine_are_bounded() {
    let s = parse("").unwrap();
    assert_eq!(
        (
            s.runtime.rotation.strikes,
            s.runtime.rotation.quarantine_secs
        ),
        (3, 1800)
    );
    let s = parse("[runtime.rotation]\nstrikes = 100\nquarantine_secs = 0\n").unwrap();
    assert_eq!(
        (
            s.runtime.rotation.strikes,
            s.runtime.rotation.quarantine_secs
        ),
        (STRIKES_MAX, 0)
    );
    assert_eq!(
        parse("[runtime.rotation]\nstrikes = 0\n").unwrap_err(),
        "invalid settings in /r/config.toml: `runtime.rotation.strikes` = 0: must be between 1 and 100"
    );
    let err = parse("[runtime.rotation]\nstrikes = 101\n").unwrap_err();
    assert!(err.contains("`runtime.rotation.strikes` = 101"), "{err}");
    let err = parse("[runtime.rotation]\nquarantine_secs = 31622401\n").unwrap_err();
    assert!(
        err.contains("`runtime.rotation.quarantine_secs` = 31622401: must be at most 31622400 seconds (366 days); 0 turns quarantine off"),
        "{err}"
    );
}

#[test]
fn subscriber_queue_max_is_bounded() {
    let d = parse("").unwrap().daemon;
    assert_eq!(d.subscriber_queue_max, SUBSCRIBER_QUEUE_MAX_DEFAULT);
    let small = parse("[daemon]\nsubscriber_queue_max = 1\n").unwrap();
    assert_eq!(small.daemon.subscriber_queue_max, 1);
    for bad in ["0", "262145"] {
        let err = parse(&format!("[daemon]\nsubscriber_queue_max = {bad}\n")).unwrap_err();
        assert!(
            err.contains(&format!("`daemon.subscriber_queue_max` = {bad}")),
            "{err}"
        );
        assert!(err.contains("between 1 and 262144"), "{err}");
    }
}

#[test]
fn history_kept_takes_zero_for_everything_and_is_bounded() {
    assert_eq!(parse("").unwrap().daemon.history_kept, HISTORY_KEPT_DEFAULT);
    for ok in ["0", "1", "100000000"] {
        let s = parse(&format!("[daemon]\nhistory_kept = {ok}\n")).unwrap();
        assert_eq!(s.daemon.history_kept.to_string(), ok);
    }
    let err = parse("[daemon]\nhistory_kept = 100000001\n").unwrap_err();
    assert!(err.contains("`daemon.history_kept` = 100000001"), "{err}");
    assert!(
        err.contains("0 (keep every row) or at most 100000000"),
        "{err}"
    );
}

#[test]
fn busy_poll_us_is_bounded() {
    assert_eq!(parse("").unwrap().daemon.busy_poll_us, BUSY_POLL_US_DEFAULT);
    assert_eq!(
        parse("[daemon]\nbusy_poll_us = 0\n")
            .unwrap()
            .daemon
            .busy_poll_us,
        0
    );
    let err = parse("[daemon]\nbusy_poll_us = 1001\n").unwrap_err();
    assert!(err.contains("`daemon.busy_poll_us` = 1001"), "{err}");
    assert!(err.contains("between 0 (off) and 1000"), "{err}");
}

#[test]
fn socket_group_must_name_a_known_group() {
    let err = parse("[daemon]\nsocket_group = \"no-such-group-xrat\"\n").unwrap_err();
    assert!(err.contains("/r/config.toml"), "{err}");
    assert!(
        err.contains("`daemon.socket_group` = \"no-such-group-xrat\""),
        "{err}"
    );
    assert!(err.contains("groupadd") && err.contains("\"\""), "{err}");
    let fine = parse("[daemon]\nsocket_group = \"root\"\n");
    assert!(fine.is_ok(), "{fine:?}");
}

#[test]
fn api_cors_origins_must_be_origins() {
    assert!(parse("").unwrap().api.cors_origins.is_empty());
    let s = parse("[api]\ncors_origins = [\"http://127.0.0.1:9090\", \"https://ui.example\"]\n")
        .unwrap();
    assert_eq!(
        s.api.cors_origins,
        ["http://127.0.0.1:9090", "https://ui.example"]
    );
    for bad in [
        "127.0.0.1:9090",
        "http://127.0.0.1:9090/",
        "http://127.0.0.1:9090/ui",
        "http://127.0.0.1:80",
        "ftp://host",
        "*",
    ] {
        let err = parse(&format!("[api]\ncors_origins = [{bad:?}]\n")).unwrap_err();
        assert!(err.contains("`api.cors_origins`"), "{bad}: {err}");
        assert!(err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn sched_slice_us_is_bounded() {
    assert_eq!(
        parse("").unwrap().daemon.sched_slice_us,
        SCHED_SLICE_US_DEFAULT
    );
    let zero = parse("[daemon]\nsched_slice_us = 0\n").unwrap();
    assert_eq!(zero.daemon.sched_slice_us, 0);
    for bad in [1, 99, 100_001] {
        let err = parse(&format!("[daemon]\nsched_slice_us = {bad}\n")).unwrap_err();
        assert!(
            err.contains(&format!("`daemon.sched_slice_us` = {bad}")),
            "{err}"
        );
        assert!(err.contains("between 100 and 100000"), "{err}");
    }
}
