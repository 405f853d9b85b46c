//! hysteria2, tuic v5, anytls and HTTP(S) proxies end to end (issue 11): a sing-box server (the
//! wheel is built `with_quic`) for each, and the real `xrat` daemon running mihomo, then
//! sing-box (and V2Ray for the HTTP proxies), as its core
//! for the imported link; a local HTTP page is fetched through the session's SOCKS port and
//! the server's log shows it relayed the request. Shadowsocks through a `v2ray-plugin` link
//! (plain WebSocket) is served by V2Ray, on mihomo and V2Ray as the daemon's core (sing-box has
//! no transport for Shadowsocks; simple-obfs has no server here, so it is covered by the render
//! checks only). Nothing leaves 127.0.0.1.

mod common;

use std::time::Duration;

use xrat::core::{detect_at, ready_grace};
use xrat::settings::CoreChoice;

use common::cores::{mihomo_bin, sing_box_bin, v2ray_bin, HttpTarget, NewerProto, NewerServer};
use common::daemon::Daemon;

/// `[runtime]` lines for a core by path, and how long after connect to let it settle (mihomo
/// accepts on its port before its tunnel runs: `xrat::core::ready_grace`; the reactor does not
/// wait for that yet).
fn runtime(choice: CoreChoice) -> (String, Duration) {
    let (name, path) = match choice {
        CoreChoice::Mihomo => ("mihomo", mihomo_bin()),
        CoreChoice::V2ray => ("v2ray", v2ray_bin()),
        _ => ("sing-box", sing_box_bin()),
    };
    let grace = ready_grace(&detect_at(&path, choice).unwrap());
    (
        format!("core = \"{name}\"\ncore_path = \"{}\"\n", path.display()),
        grace,
    )
}

fn case(proto: NewerProto, choice: CoreChoice) {
    let target = HttpTarget::start();
    let server = NewerServer::start(proto);
    let (lines, grace) = runtime(choice);
    let daemon = Daemon::start(&lines, &target);
    let config_id = daemon.import(&server.link());
    daemon.connect(config_id);
    std::thread::sleep(grace);
    let body = daemon.fetch(
        &target,
        &format!("{} (server log:\n{})", proto.name(), server.log()),
    );
    assert_eq!(body, target.body());
    assert!(
        server.relayed_to(target.port()),
        "the {} server did not relay to the target; log:\n{}",
        proto.name(),
        server.log()
    );
    let status = daemon.status();
    assert_eq!(status["runtime_status"], "running", "{status}");
    assert_eq!(status["config_name"], server.name(), "{status}");
    let core = match choice {
        CoreChoice::Mihomo => "mihomo",
        CoreChoice::V2ray => "v2ray",
        _ => "sing-box",
    };
    assert_eq!(status["core"], core, "{status}");
    daemon.json(&["disconnect"]);
}

macro_rules! cases {
    ($($name:ident: $proto:ident on $core:ident;)*) => {
        $(
            #[test]
            fn $name() {
                case(NewerProto::$proto, CoreChoice::$core);
            }
        )*
    };
}

cases! {
    hysteria2_on_mihomo: Hysteria2 on Mihomo;
    hysteria2_on_sing_box: Hysteria2 on SingBox;
    tuic_on_mihomo: Tuic on Mihomo;
    tuic_on_sing_box: Tuic on SingBox;
    anytls_on_mihomo: Anytls on Mihomo;
    anytls_on_sing_box: Anytls on SingBox;
    http_proxy_on_mihomo: Http on Mihomo;
    http_proxy_on_sing_box: Http on SingBox;
    http_proxy_on_v2ray: Http on V2ray;
    https_proxy_on_mihomo: Https on Mihomo;
    https_proxy_on_sing_box: Https on SingBox;
    https_proxy_on_v2ray: Https on V2ray;
    ss_v2ray_plugin_on_mihomo: SsWs on Mihomo;
    ss_v2ray_plugin_on_v2ray: SsWs on V2ray;
}
