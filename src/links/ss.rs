//! `ss://` links in the three shapes seen in the wild:
//! SIP002 `ss://base64url(method:password)@host:port#name`, SIP002 with a plain percent-encoded
//! `method:password` userinfo (used for 2022 keys), and the legacy
//! `ss://base64(method:password@host:port)#name`.

use super::common::{decode_base64_text, finish, percent_decode, UrlLink};
use super::error::LinkError;
use super::model::{
    Outbound, ParsedLink, Protocol, Scheme, Security, ShadowsocksMethod, Transport,
};

const USERINFO_EXPECTED: &str = "base64 of method:password (or method:password percent-encoded)";
const PLUGIN_EXPECTED: &str = "no plugin (SIP003 plugins are not supported)";

/// Parses one `ss://` link.
pub(crate) fn parse(line: &str) -> Result<ParsedLink, LinkError> {
    let body = line.split_once("://").map_or(line, |(_, body)| body);
    let (before_name, name) = match body.split_once('#') {
        Some((before, name)) => (before, Some(name)),
        None => (body, None),
    };
    // base64 has no '@', so its absence is what marks the legacy shape.
    if before_name.contains('@') {
        sip002(line)
    } else {
        legacy(line, before_name, name)
    }
}

fn sip002(line: &str) -> Result<ParsedLink, LinkError> {
    let link = UrlLink::parse(Scheme::Shadowsocks, line)?;
    // Silently dropping a plugin would give an outbound that cannot reach the server.
    if let Some(plugin) = link.params.get("plugin") {
        let name = plugin.split(';').next().unwrap_or_default();
        return Err(link.params.invalid("plugin", name, PLUGIN_EXPECTED));
    }
    let (method, password) = match &link.password {
        Some(password) => (link.username.clone(), password.clone()),
        // `url` drops an empty password, so `method:@` and `method@` both land here.
        None if ShadowsocksMethod::from_name(&link.username).is_some() => {
            return Err(LinkError::missing(Scheme::Shadowsocks, "password"));
        }
        None => credentials(&link.username)?,
    };
    let protocol = protocol(&method, password)?;
    let outbound = Outbound {
        protocol,
        server: link.server,
        port: link.port,
        transport: Transport::Tcp,
        security: Security::None,
    };
    Ok(finish(line, Scheme::Shadowsocks, link.name, outbound))
}

fn legacy(line: &str, payload: &str, name: Option<&str>) -> Result<ParsedLink, LinkError> {
    let invalid = LinkError::Base64 {
        scheme: Scheme::Shadowsocks,
        what: "link body",
        expected: "base64 of method:password@host:port",
    };
    let text = decode_base64_text(&percent_decode(payload)).ok_or(invalid.clone())?;
    // The password may itself contain '@'; the host never does.
    let (userinfo, host_port) = text.rsplit_once('@').ok_or(invalid)?;
    let (method, password) = userinfo.split_once(':').ok_or(LinkError::missing(
        Scheme::Shadowsocks,
        "password after method",
    ))?;
    let protocol = protocol(method, password.to_owned())?;
    // Reuse the URL parser for host and port only: the decoded password is not URL-escaped.
    let endpoint = UrlLink::parse(Scheme::Shadowsocks, &format!("ss://{host_port}"))?;
    let name = name
        .map(percent_decode)
        .filter(|name| !name.trim().is_empty());
    let outbound = Outbound {
        protocol,
        server: endpoint.server,
        port: endpoint.port,
        transport: Transport::Tcp,
        security: Security::None,
    };
    Ok(finish(line, Scheme::Shadowsocks, name, outbound))
}

/// Splits base64 `method:password` userinfo.
fn credentials(encoded: &str) -> Result<(String, String), LinkError> {
    let invalid = LinkError::Base64 {
        scheme: Scheme::Shadowsocks,
        what: "user info",
        expected: USERINFO_EXPECTED,
    };
    let text = decode_base64_text(encoded).ok_or(invalid.clone())?;
    let (method, password) = text.split_once(':').ok_or(invalid)?;
    Ok((method.to_owned(), password.to_owned()))
}

fn protocol(method: &str, password: String) -> Result<Protocol, LinkError> {
    let Some(method) = ShadowsocksMethod::from_name(method) else {
        return Err(LinkError::invalid(
            Scheme::Shadowsocks,
            "method",
            method,
            ShadowsocksMethod::EXPECTED,
        ));
    };
    if password.is_empty() {
        return Err(LinkError::missing(Scheme::Shadowsocks, "password"));
    }
    Ok(Protocol::Shadowsocks { method, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ss(method: ShadowsocksMethod, password: &str) -> Protocol {
        Protocol::Shadowsocks {
            method,
            password: password.into(),
        }
    }

    fn err(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn sip002_base64_userinfo() {
        let line = "ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg==@198.51.100.4:8388\
            #%F0%9F%87%B8%F0%9F%87%AC%20Singapore%20SS";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "🇸🇬 Singapore SS");
        assert_eq!(link.raw, line);
        let out = link.outbound;
        assert_eq!(
            out.protocol,
            ss(ShadowsocksMethod::Aes256Gcm, "n8w4StnbVD9dmXYn")
        );
        assert_eq!((out.server.as_str(), out.port), ("198.51.100.4", 8388));
        assert_eq!(
            (out.transport, out.security),
            (Transport::Tcp, Security::None)
        );
    }

    #[test]
    fn sip002_url_safe_unpadded_with_trailing_slash() {
        let line = "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpQYTU1dzByZD8-@ss.example.net:443/";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "ss ss.example.net:443");
        let want = ss(ShadowsocksMethod::Chacha20IetfPoly1305, "Pa55w0rd?>");
        assert_eq!(link.outbound.protocol, want);
    }

    #[test]
    fn sip002_plain_2022_key_on_ipv6() {
        let line =
            "ss://2022-blake3-aes-256-gcm:yMnKy8zNzs%2FQ0dLT1NXW19jZ2tvc3d7f4OHi4%2BTl5uc%3D\
            @[2001:db8::2]:8443#SS%202022";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "SS 2022");
        assert_eq!(link.outbound.server, "2001:db8::2");
        let key = "yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5uc=";
        assert_eq!(
            link.outbound.protocol,
            ss(ShadowsocksMethod::Blake3Aes256Gcm, key)
        );
    }

    #[test]
    fn legacy_all_base64() {
        let line = "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpsZWdhY3ktc2VjcmV0QDE5Mi4wLjIuMTA6ODM4OQ==\
            #Legacy%20%E8%8A%82%E7%82%B9";
        let link = parse(line).unwrap();
        assert_eq!(link.name, "Legacy 节点");
        let out = link.outbound;
        let want = ss(ShadowsocksMethod::Chacha20IetfPoly1305, "legacy-secret");
        assert_eq!(out.protocol, want);
        assert_eq!((out.server.as_str(), out.port), ("192.0.2.10", 8389));
        // Unpadded and without a name.
        let bare =
            parse("ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpsZWdhY3ktc2VjcmV0QDE5Mi4wLjIuMTA6ODM4OQ");
        assert_eq!(bare.unwrap().name, "ss 192.0.2.10:8389");
    }

    #[test]
    fn methods_are_checked() {
        assert_eq!(
            err("ss://YWVzLTEyOC1jZmI6b2xkQDE5Mi4wLjIuMTA6ODM4OQ==#old"),
            "ss: method is \"aes-128-cfb\", expected one of aes-128-gcm, aes-256-gcm, \
             chacha20-ietf-poly1305, xchacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
             2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305"
        );
        assert_eq!(
            err("ss://cmM0LW1kNTp4@192.0.2.1:8388"),
            "ss: method is \"rc4-md5\", expected one of aes-128-gcm, aes-256-gcm, \
             chacha20-ietf-poly1305, xchacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
             2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305"
        );
        let upper = parse("ss://AES-128-GCM:pw@192.0.2.1:8388").unwrap();
        assert_eq!(
            upper.outbound.protocol,
            ss(ShadowsocksMethod::Aes128Gcm, "pw")
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("ss://not*base64@192.0.2.1:8388"),
            "ss: user info is not valid base64, \
             expected base64 of method:password (or method:password percent-encoded)"
        );
        assert_eq!(
            err("ss://bm90IGJhc2U2NA#x"),
            "ss: link body is not valid base64, expected base64 of method:password@host:port"
        );
        assert_eq!(
            err("ss://aes-256-gcm:@192.0.2.1:8388"),
            "ss: missing password"
        );
        assert_eq!(
            err("ss://aes-256-gcm@192.0.2.1:8388"),
            "ss: missing password"
        );
        assert_eq!(
            err(
                "ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg@192.0.2.1:8388/\
                ?plugin=obfs-local%3Bobfs%3Dhttp%3Bobfs-host%3Dexample.com"
            ),
            "ss: parameter \"plugin\" is \"obfs-local\", \
             expected no plugin (SIP003 plugins are not supported)"
        );
        assert_eq!(
            err("ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg@192.0.2.1"),
            "ss: missing port"
        );
    }
}
