//! Configs with several members in one core process: the batch test's (DESIGN §7), one SOCKS
//! inbound per candidate, and the pool core's (front mode, DESIGN §1), which adds an HTTP
//! inbound per member when `runtime.http_port` is set. Both are one shape, rendered here once;
//! the format modules only lay out the members.

use std::net::IpAddr;

use super::{check_support, mihomo, singbox, to_text, xray, CoreBinary, CoreError, CoreKind};
use crate::links::Outbound;

/// One member of a batch or pool core: its internal inbounds and the outbound they lead to.
#[derive(Debug, Clone, Copy)]
pub struct PoolInbound<'a> {
    /// SOCKS5 inbound (no auth, UDP on).
    pub socks_port: u16,
    /// HTTP proxy inbound, when `runtime.http_port` is set (pools only).
    pub http_port: Option<u16>,
    /// Where both inbounds lead.
    pub outbound: &'a Outbound,
}

/// The tags a member's inbounds and outbound carry in every format: named by the SOCKS port,
/// which is unique in the config, so a person reading the file can match them.
pub(crate) struct MemberTags {
    pub socks: String,
    pub http: Option<String>,
    pub outbound: String,
}

impl PoolInbound<'_> {
    pub(crate) fn tags(&self) -> MemberTags {
        MemberTags {
            socks: format!("in-{}", self.socks_port),
            http: self.http_port.map(|port| format!("http-{port}")),
            outbound: format!("out-{}", self.socks_port),
        }
    }
}

impl MemberTags {
    /// The member's inbound tags, SOCKS first: what its routing rule matches.
    pub(crate) fn inbounds(&self) -> Vec<&str> {
        std::iter::once(self.socks.as_str())
            .chain(self.http.as_deref())
            .collect()
    }
}

/// Renders one config for a batch test (DESIGN §7): one SOCKS inbound per candidate on its
/// port, each routed to that candidate's outbound. Filter candidates with [`check_support`]
/// first; an unsupported one fails the whole render.
pub fn render_batch(
    core: &CoreBinary,
    listen: IpAddr,
    candidates: &[(u16, &Outbound)],
) -> Result<String, CoreError> {
    let members: Vec<PoolInbound<'_>> = candidates
        .iter()
        .map(|(port, outbound)| PoolInbound {
            socks_port: *port,
            http_port: None,
            outbound,
        })
        .collect();
    render_members(core, listen, &members, Multi::Batch)
}

/// Renders one config for a pool core (front mode, DESIGN §1): per member a SOCKS inbound and,
/// when it has one, an HTTP inbound, both routed to that member's outbound. As with
/// [`render_batch`], an unsupported member fails the whole render.
pub fn render_pool(
    core: &CoreBinary,
    listen: IpAddr,
    members: &[PoolInbound<'_>],
) -> Result<String, CoreError> {
    render_members(core, listen, members, Multi::Pool)
}

/// Batch and pool configs have the same shape; they differ in what the errors call them.
#[derive(Debug, Clone, Copy)]
enum Multi {
    Batch,
    Pool,
}

impl Multi {
    /// (the whole, one part, what a repeated port was given to)
    fn words(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Multi::Batch => ("a batch", "candidate", "two candidates"),
            Multi::Pool => ("a pool", "member", "two inbounds of the pool"),
        }
    }
}

fn render_members(
    core: &CoreBinary,
    listen: IpAddr,
    members: &[PoolInbound<'_>],
    multi: Multi,
) -> Result<String, CoreError> {
    let (whole, part, twice) = multi.words();
    if members.is_empty() {
        return Err(CoreError::Render(format!(
            "{whole} needs at least one {part}"
        )));
    }
    let mut ports: Vec<u16> = members
        .iter()
        .flat_map(|m| std::iter::once(m.socks_port).chain(m.http_port))
        .collect();
    ports.sort_unstable();
    if ports[0] == 0 {
        return Err(CoreError::Render("inbound port 0".into()));
    }
    if let Some(pair) = ports.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(CoreError::Render(format!(
            "port {} given to {twice}",
            pair[0]
        )));
    }
    for member in members {
        check_support(core, member.outbound)?;
    }
    let value = match core.kind {
        CoreKind::SingBox => singbox::members(core, listen, members),
        CoreKind::Mihomo => mihomo::members(listen, members),
        CoreKind::Xray | CoreKind::V2ray4 | CoreKind::V2ray5 => {
            xray::members(core, listen, members)
        }
    };
    Ok(to_text(&value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{binary, trojan_tls, vless_ws_tls};

    fn member(socks_port: u16, http_port: Option<u16>, outbound: &Outbound) -> PoolInbound<'_> {
        PoolInbound {
            socks_port,
            http_port,
            outbound,
        }
    }

    #[test]
    fn pool_renders_refuse_bad_members() {
        let core = binary(CoreKind::Mihomo, "1.19.32");
        let (a, b) = (vless_ws_tls(), trojan_tls());
        let listen = IpAddr::from([127, 0, 0, 1]);
        let err = |members: &[PoolInbound<'_>]| {
            render_pool(&core, listen, members).unwrap_err().to_string()
        };
        assert_eq!(
            err(&[]),
            "cannot render core config: a pool needs at least one member"
        );
        // An HTTP port may not repeat a SOCKS port, of its own member or another's.
        assert_eq!(
            err(&[member(1081, Some(1082), &a), member(1082, None, &b)]),
            "cannot render core config: port 1082 given to two inbounds of the pool"
        );
        assert_eq!(
            err(&[member(1081, Some(1081), &a)]),
            "cannot render core config: port 1081 given to two inbounds of the pool"
        );
        assert_eq!(
            err(&[member(1081, Some(0), &a)]),
            "cannot render core config: inbound port 0"
        );
        let v2ray = binary(CoreKind::V2ray4, "4.34.0");
        let hy2 = crate::core::fixtures::newer_outbounds().remove(1);
        let refused = render_pool(
            &v2ray,
            listen,
            &[member(1081, None, &a), member(1082, None, &hy2)],
        );
        assert!(refused.is_err(), "an unsupported member fails the render");
    }

    #[test]
    fn a_batch_is_a_pool_without_http_inbounds() {
        let core = binary(CoreKind::SingBox, "1.14.4");
        let (a, b) = (vless_ws_tls(), trojan_tls());
        let listen = IpAddr::from([127, 0, 0, 1]);
        let batch = render_batch(&core, listen, &[(1081, &a), (1082, &b)]).unwrap();
        let pool = render_pool(
            &core,
            listen,
            &[member(1081, None, &a), member(1082, None, &b)],
        );
        assert_eq!(batch, pool.unwrap());
    }
}
