//! Which cores carry Encrypted Client Hello (`ech=`) and ShadowTLS (`shadow-tls=`).
//!
//! Both change the handshake the server expects, so a core that cannot send them must refuse
//! the config rather than run it without. sing-box 1.14 (Go's own ECH client, no build tag) and
//! mihomo 1.19 carry both; V2Ray has neither, and Xray's ECH and lack of ShadowTLS are not
//! checked here (no Xray binary is in reach of the test machines), so the Xray family refuses.
//! ECH is tested end to end for VLESS; vmess and trojan use the same TLS object in both
//! renderers. On the other TLS protocols it is refused: mihomo's hysteria2/tuic/anytls/http take
//! their TLS elsewhere, and no server here was run with them.

use super::support::{protocol_name, Refusal};
use crate::links::{Outbound, Protocol, Security, Transport};

/// The fix when only sing-box or mihomo can run a feature.
const USE_SING_BOX_OR_MIHOMO: &str = "use sing-box or mihomo (set runtime.core)";

/// Why `outbound` cannot run on a core of the Xray family (`xray_family`) or any other core.
pub(super) fn refusal(xray_family: bool, outbound: &Outbound) -> Refusal {
    let protocol = protocol_name(outbound);
    let ech = matches!(&outbound.security, Security::Tls(tls) if tls.ech.is_some());
    if ech {
        let carried = matches!(
            outbound.protocol,
            Protocol::Vless { .. } | Protocol::Vmess { .. } | Protocol::Trojan { .. }
        );
        if !carried {
            return Some((
                format!("Encrypted Client Hello on {protocol} ({protocol} ech)"),
                "xrat carries ECH on vless, vmess and trojan only; use a link without ech=",
            ));
        }
        if xray_family {
            return Some((
                format!("Encrypted Client Hello ({protocol} ech)"),
                USE_SING_BOX_OR_MIHOMO,
            ));
        }
    }
    if let Transport::ShadowTls { .. } = outbound.transport {
        let bare_ss = matches!(outbound.protocol, Protocol::Shadowsocks { .. })
            && outbound.security == Security::None;
        if !bare_ss {
            return Some((
                format!("{protocol} over shadow-tls"),
                "ShadowTLS is a Shadowsocks stream without TLS of its own; fix the link",
            ));
        }
        if xray_family {
            return Some((
                "ShadowTLS (shadowsocks shadow-tls)".into(),
                USE_SING_BOX_OR_MIHOMO,
            ));
        }
    }
    None
}
