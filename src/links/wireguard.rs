//! `wireguard://<private key>@host:port?publickey=..&address=10.0.0.2/32,fd00::2/128
//! &presharedkey=..&reserved=1,2,3&mtu=1280#name` (also `wg://`, and `privatekey=` in the query
//! instead of the user part), as v2rayN and sing-box share WireGuard peers.

use super::common::{decode_base64, finish, UrlLink};
use super::error::LinkError;
use super::model::{Outbound, ParsedLink, Protocol, Scheme, Security, Transport};
use super::params::Params;

const KEY_EXPECTED: &str = "a base64 x25519 key (32 bytes)";
const ADDRESS_EXPECTED: &str = "IPv4 and/or IPv6 addresses, comma-separated, /prefix optional";
const RESERVED_EXPECTED: &str = "three bytes, as 1,2,3 or base64";
const MTU_EXPECTED: &str = "a number 576-65535";

/// Parses one `wireguard://` or `wg://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let scheme = Scheme::Wireguard;
    let link = UrlLink::parse(scheme, line)?;
    let params = &link.params;
    let private_key = match link.username.as_str() {
        "" => params
            .get("privatekey")
            .or(params.get("secretKey"))
            .map(str::to_owned)
            .ok_or(LinkError::missing(scheme, "private key before '@'"))?,
        user => user.to_owned(),
    };
    key(params, "privatekey", &private_key)?;
    let public_key = params
        .get("publickey")
        .or(params.get("publicKey"))
        .ok_or(LinkError::missing(
            scheme,
            "parameter \"publickey\" (the peer's key)",
        ))?
        .to_owned();
    key(params, "publickey", &public_key)?;
    let pre_shared_key = params
        .get("presharedkey")
        .or(params.get("preSharedKey"))
        .map(str::to_owned);
    if let Some(psk) = &pre_shared_key {
        key(params, "presharedkey", psk)?;
    }
    let (mut ipv4, mut ipv6) = (None, None);
    let addresses = params
        .get("address")
        .or(params.get("ip"))
        .unwrap_or_default();
    for part in addresses
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let ip = part.split('/').next().unwrap_or_default();
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) if ipv4.is_none() => ipv4 = Some(v4.to_string()),
            Ok(std::net::IpAddr::V6(v6)) if ipv6.is_none() => ipv6 = Some(v6.to_string()),
            _ => return Err(params.invalid("address", addresses, ADDRESS_EXPECTED)),
        }
    }
    if ipv4.is_none() && ipv6.is_none() {
        return Err(LinkError::missing(
            scheme,
            "parameter \"address\" (the client's tunnel address)",
        ));
    }
    let reserved = match params.get("reserved") {
        None => None,
        Some(text) => {
            Some(reserved(text).ok_or(params.invalid("reserved", text, RESERVED_EXPECTED))?)
        }
    };
    let mtu = match params.get("mtu") {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(mtu) if mtu >= 576 => Some(mtu),
            _ => return Err(params.invalid("mtu", text, MTU_EXPECTED)),
        },
    };
    let outbound = Outbound {
        protocol: Protocol::Wireguard {
            private_key,
            public_key,
            pre_shared_key,
            ipv4,
            ipv6,
            reserved,
            mtu,
        },
        server: link.server.clone(),
        port: link.port,
        transport: Transport::Tcp,
        security: Security::None,
    };
    Ok(finish(line, scheme, link.name, outbound))
}

/// Checks a key is base64 of 32 bytes. Keys are secrets, so the message does not quote them.
fn key(params: &Params, name: &'static str, value: &str) -> Result<(), LinkError> {
    if decode_base64(value).is_some_and(|bytes| bytes.len() == 32) {
        return Ok(());
    }
    Err(params.invalid(name, "(hidden)", KEY_EXPECTED))
}

/// `1,2,3` or the base64 of three bytes.
fn reserved(text: &str) -> Option<[u8; 3]> {
    if text.contains(',') {
        let bytes: Vec<u8> = text
            .split(',')
            .map(|b| b.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .ok()?;
        return bytes.try_into().ok();
    }
    decode_base64(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = "yAnz5TF%2BlXXJte14tji3zlMNq%2BhdTFVPzk%2BAH3MiqHc%3D";
    const PUBLIC: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn full_link_and_the_wg_alias() {
        let line = format!(
            "wireguard://{PRIVATE}@162.159.192.1:2408?publickey={}&address=172.16.0.2%2F32%2C\
             2606%3A4700%3A110%3A8a36%3A%3A2%2F128&reserved=1%2C2%2C3&mtu=1280#WARP",
            PUBLIC.replace('+', "%2B").replace('=', "%3D")
        );
        let link = crate::links::parse_link(&line).unwrap();
        assert_eq!(link.name, "WARP");
        assert_eq!(
            link.outbound.protocol,
            Protocol::Wireguard {
                private_key: "yAnz5TF+lXXJte14tji3zlMNq+hdTFVPzk+AH3MiqHc=".into(),
                public_key: PUBLIC.into(),
                pre_shared_key: None,
                ipv4: Some("172.16.0.2".into()),
                ipv6: Some("2606:4700:110:8a36::2".into()),
                reserved: Some([1, 2, 3]),
                mtu: Some(1280),
            }
        );
        let wg = crate::links::parse_link(&format!(
            "wg://198.51.100.1:51820?privatekey={PRIVATE}&publickey={PUBLIC}&address=10.0.0.2\
             &reserved=AQID"
        ))
        .unwrap();
        assert_eq!(wg.name, "wireguard 198.51.100.1:51820");
        assert!(matches!(
            wg.outbound.protocol,
            Protocol::Wireguard {
                reserved: Some([1, 2, 3]),
                ipv6: None,
                ..
            }
        ));
    }

    #[test]
    fn errors() {
        let err = |query: &str| {
            crate::links::parse_link(&format!("wg://{PRIVATE}@198.51.100.1:51820?{query}"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("address=10.0.0.2"),
            "wireguard: missing parameter \"publickey\" (the peer's key)"
        );
        assert_eq!(
            err("publickey=short&address=10.0.0.2"),
            "wireguard: parameter \"publickey\" is \"(hidden)\", expected a base64 x25519 key \
             (32 bytes)"
        );
        assert_eq!(
            err(&format!("publickey={PUBLIC}")),
            "wireguard: missing parameter \"address\" (the client's tunnel address)"
        );
        assert_eq!(
            err(&format!("publickey={PUBLIC}&address=10.0.0.300")),
            "wireguard: parameter \"address\" is \"10.0.0.300\", expected IPv4 and/or IPv6 \
             addresses, comma-separated, /prefix optional"
        );
        assert_eq!(
            err(&format!("publickey={PUBLIC}&address=10.0.0.2&reserved=1,2")),
            "wireguard: parameter \"reserved\" is \"1,2\", expected three bytes, as 1,2,3 or base64"
        );
        assert_eq!(
            err(&format!("publickey={PUBLIC}&address=10.0.0.2&mtu=100")),
            "wireguard: parameter \"mtu\" is \"100\", expected a number 576-65535"
        );
    }
}
