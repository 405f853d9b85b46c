//! The Docker recipe (packaging/docker) without Docker: this machine has no Docker daemon and no
//! registry to pull base images from, so the image is not built here. What the image relies on
//! is: its config.toml parses and serves, and the daemon runs on epoll under a seccomp filter
//! that refuses io_uring_setup with EPERM, as Docker's default profile does.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::seccomp::run_server_under_seccomp;
use common::{text, wait_until, Root};

/// The settings file the image copies into its root on first start.
const DOCKER_SETTINGS: &str = include_str!("../packaging/docker/config.toml");

#[test]
fn the_images_settings_serve_on_epoll_under_dockers_seccomp_profile() {
    let root = Root::new();
    std::fs::create_dir_all(root.path()).unwrap();
    // The image's file as is, but for the port: tests run side by side, so a free one.
    let port = common::cores::free_port();
    let settings = DOCKER_SETTINGS.replace("socks_port = 1080", &format!("socks_port = {port}"));
    assert_ne!(
        settings, DOCKER_SETTINGS,
        "the image's config.toml names socks_port = 1080"
    );
    std::fs::write(root.path().join("config.toml"), &settings).unwrap();
    let log = root.path().join("container.log");
    let mut child = run_server_under_seccomp(&root, None)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || root.socket().exists()),
        "no socket; log:\n{}",
        log_text()
    );
    let out = root.run(&["daemon", "status", "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["backend"], "epoll", "{view}");
    // The front port is bound on every address, as the image's port mapping needs.
    let status = root.run(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "nothing listens on the front port {port}; log:\n{}",
        log_text()
    );
    let sockets = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let wildcard = format!("00000000:{port:04X}");
    assert!(sockets.contains(&wildcard), "not bound to 0.0.0.0:{port}");
    let stop = root.run(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert!(child.wait().unwrap().success(), "log:\n{}", log_text());
    assert!(
        log_text().contains("serving on epoll instead"),
        "{}",
        log_text()
    );
}
