//! `ss://` links in the three shapes seen in the wild:
//! SIP002 `ss://base64url(method:password)@host:port#name`, SIP002 with a plain percent-encoded
//! `method:password` userinfo (used for 2022 keys), and the legacy
//! `ss://base64(method:password@host:port)#name`.
//!
//! SIP002 links may carry a SIP003 plugin (`plugin=obfs-local;obfs=http;obfs-host=..`, or
//! `v2ray-plugin;tls;host=..;path=..`) or an Xray-style stream (`type=ws&path=..&security=tls`);
//! both become the outbound's transport and security. Anything that would change the stream
//! and that no core here carries (other plugins, v2ray-plugin's QUIC mode) is an import error:
//! dropping it would give an outbound that cannot reach the server. `shadow-tls=` becomes the
//! ShadowTLS transport (sing-box and mihomo run it).

use super::common::{decode_base64_text, finish, percent_decode, UrlLink};
use super::error::{quote, LinkError};
use super::model::{
    ObfsMode, Outbound, ParsedLink, Protocol, Scheme, Security, ShadowsocksMethod, TlsSettings,
    Transport,
};
use super::params::{security, transport, Params};

const USERINFO_EXPECTED: &str = "base64 of method:password (or method:password percent-encoded)";
const OBFS_EXPECTED: &str = "http or tls";

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
    let (transport, security) = stream(&link.params)?;
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
        transport,
        security,
    };
    Ok(finish(line, Scheme::Shadowsocks, link.name, outbound))
}

/// The stream a SIP002 link asks for: a plugin, or `type=`/`security=`, or bare TCP.
fn stream(params: &Params) -> Result<(Transport, Security), LinkError> {
    let scheme = Scheme::Shadowsocks;
    if let Some(value) = params.get("shadow-tls") {
        if ["plugin", "type", "security"]
            .iter()
            .any(|key| params.get(key).is_some())
        {
            return Err(LinkError::Unsupported {
                scheme,
                what: "ShadowTLS together with a plugin, \"type\" or \"security\"".into(),
                fix: "use a link with one of them",
            });
        }
        return Ok((super::shadow_tls::parse(value)?, Security::None));
    }
    let Some(plugin) = params.get("plugin") else {
        return Ok((transport(params)?, security(params, "none")?));
    };
    if params.get("type").is_some() || params.get("security").is_some() {
        return Err(LinkError::Unsupported {
            scheme,
            what: "a plugin together with \"type\" or \"security\"".into(),
            fix: "use a link with one of them",
        });
    }
    // `name;key=value;flag;...` (SIP003 plugin options).
    let mut parts = plugin.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    let options: Vec<(&str, Option<&str>)> = parts
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (part, None),
        })
        .collect();
    let option = |key: &str| {
        options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, value)| *value)
            .filter(|value| !value.is_empty())
    };
    let flag = |key: &str| options.iter().any(|(k, _)| k.eq_ignore_ascii_case(key));
    match name.to_ascii_lowercase().as_str() {
        "obfs-local" | "simple-obfs" => {
            let mode = match option("obfs").map(str::to_ascii_lowercase).as_deref() {
                Some("http") => ObfsMode::Http,
                Some("tls") => ObfsMode::Tls,
                Some(other) => {
                    return Err(LinkError::invalid(
                        scheme,
                        "plugin option \"obfs\"",
                        other,
                        OBFS_EXPECTED,
                    ))
                }
                None => {
                    return Err(LinkError::missing(
                        scheme,
                        "plugin option \"obfs\" (http or tls)",
                    ))
                }
            };
            let host = option("obfs-host").map(str::to_owned);
            Ok((Transport::Obfs { mode, host }, Security::None))
        }
        "v2ray-plugin" => {
            if let Some(mode) = option("mode").filter(|m| !m.eq_ignore_ascii_case("websocket")) {
                return Err(LinkError::Unsupported {
                    scheme,
                    what: format!("v2ray-plugin mode \"{}\"", quote(mode)),
                    fix: "use a link with mode=websocket",
                });
            }
            let host = option("host").map(str::to_owned);
            let transport = Transport::Ws {
                path: option("path").unwrap_or("/").to_owned(),
                host: host.clone(),
            };
            // v2ray-plugin sends its `host` as the TLS server name too.
            let security = if flag("tls") {
                Security::Tls(TlsSettings {
                    sni: host,
                    alpn: Vec::new(),
                    fingerprint: None,
                    allow_insecure: false,
                    ech: None,
                })
            } else {
                Security::None
            };
            Ok((transport, security))
        }
        _ => Err(LinkError::Unsupported {
            scheme,
            what: format!("the plugin \"{}\"", quote(name)),
            fix: "use a link without it, or with obfs-local (simple-obfs) or v2ray-plugin",
        }),
    }
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
    let password = match method.key_bytes() {
        Some(len) => keys_2022(method, len, &password)?,
        None => password,
    };
    Ok(Protocol::Shadowsocks { method, password })
}

/// Checks a Shadowsocks 2022 password: one key (or, for the AES methods, `iPSK:uPSK` keys
/// joined by ':'), each `len` bytes in base64. The cores decode with Go's padded standard
/// base64 only (sing-box 1.14 and mihomo 1.19 refuse an unpadded key: "decode key: illegal
/// base64 data"), so a key in URL-safe or unpadded form is re-encoded, not refused; a key of
/// the wrong length, or several keys for chacha20 (sing-box: "Shadowsocks 2022 EIH support
/// only available in AES ciphers"), is refused naming the field.
pub(crate) fn keys_2022(
    method: ShadowsocksMethod,
    len: usize,
    password: &str,
) -> Result<String, LinkError> {
    use base64::Engine;
    let method_name = method.as_str();
    let refuse = |index: usize, why: String| {
        LinkError::RefusedByCores {
        scheme: Scheme::Shadowsocks,
        what: if password.contains(':') {
            format!("password key {} (of the {method_name} keys)", index + 1)
        } else {
            format!("password (the {method_name} key)")
        },
        why,
        fix: format!(
            "use the server's key: {len} random bytes in base64, e.g. from `openssl rand -base64 {len}`"
        ),
    }
    };
    let keys: Vec<&str> = password.split(':').collect();
    if keys.len() > 1 && method == ShadowsocksMethod::Blake3Chacha20Poly1305 {
        return Err(LinkError::RefusedByCores {
            scheme: Scheme::Shadowsocks,
            what: format!("password ({} keys joined by ':')", keys.len()),
            why: format!("is a multi-user key list, which {method_name} does not have"),
            fix: "use a single key, or a 2022-blake3-aes method for iPSK:uPSK keys".into(),
        });
    }
    let mut normalised = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let Some(bytes) = super::common::decode_base64(key) else {
            return Err(refuse(index, "is not base64".into()));
        };
        if bytes.len() != len {
            return Err(refuse(
                index,
                format!("decodes to {} bytes, expected {len}", bytes.len()),
            ));
        }
        normalised.push(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Ok(normalised.join(":"))
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
    fn plugins_and_streams() {
        const BASE: &str = "ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg@192.0.2.1:8388/";
        let stream = |query: &str| {
            let out = parse(&format!("{BASE}?{query}#n")).unwrap().outbound;
            (out.transport, out.security)
        };
        assert_eq!(
            stream("plugin=obfs-local%3Bobfs%3Dhttp%3Bobfs-host%3Dwww.bing.com"),
            (
                Transport::Obfs {
                    mode: ObfsMode::Http,
                    host: Some("www.bing.com".into())
                },
                Security::None
            )
        );
        assert_eq!(
            stream("plugin=simple-obfs%3Bobfs%3Dtls").0,
            Transport::Obfs {
                mode: ObfsMode::Tls,
                host: None
            }
        );
        assert_eq!(
            stream("plugin=v2ray-plugin%3Btls%3Bhost%3Dcdn.example.com%3Bpath%3D%2Fss%3Bmux%3D0"),
            (
                Transport::Ws {
                    path: "/ss".into(),
                    host: Some("cdn.example.com".into())
                },
                Security::Tls(TlsSettings {
                    sni: Some("cdn.example.com".into()),
                    alpn: Vec::new(),
                    fingerprint: None,
                    allow_insecure: false,
                    ech: None,
                })
            )
        );
        assert_eq!(
            stream("plugin=v2ray-plugin%3Bmode%3Dwebsocket"),
            (
                Transport::Ws {
                    path: "/".into(),
                    host: None
                },
                Security::None
            )
        );
        // An Xray-style stream, formerly dropped silently.
        assert_eq!(
            stream("type=ws&path=%2Fws&host=h.example.com&security=tls&sni=h.example.com"),
            (
                Transport::Ws {
                    path: "/ws".into(),
                    host: Some("h.example.com".into())
                },
                Security::Tls(TlsSettings {
                    sni: Some("h.example.com".into()),
                    alpn: Vec::new(),
                    fingerprint: None,
                    allow_insecure: false,
                    ech: None,
                })
            )
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
        const BASE: &str = "ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg@192.0.2.1:8388/";
        assert_eq!(
            err(&format!("{BASE}?plugin=kcptun%3Bmode%3Dfast")),
            "ss: the plugin \"kcptun\" is not supported; use a link without it, or with \
             obfs-local (simple-obfs) or v2ray-plugin"
        );
        assert_eq!(
            err(&format!("{BASE}?plugin=obfs-local%3Bobfs%3Dws")),
            "ss: plugin option \"obfs\" is \"ws\", expected http or tls"
        );
        assert_eq!(
            err(&format!("{BASE}?plugin=obfs-local")),
            "ss: missing plugin option \"obfs\" (http or tls)"
        );
        assert_eq!(
            err(&format!("{BASE}?plugin=v2ray-plugin%3Bmode%3Dquic")),
            "ss: v2ray-plugin mode \"quic\" is not supported; use a link with mode=websocket"
        );
        assert_eq!(
            err(&format!("{BASE}?shadow-tls=eyJ2ZXJzaW9uIjozfQ")),
            "ss: missing ShadowTLS \"host\" (the handshake server)"
        );
        assert_eq!(
            err(&format!("{BASE}?shadow-tls=eyJ2ZXJzaW9uIjozfQ&type=ws")),
            "ss: ShadowTLS together with a plugin, \"type\" or \"security\" is not supported; \
             use a link with one of them"
        );
        assert_eq!(
            err(&format!("{BASE}?plugin=v2ray-plugin&type=ws")),
            "ss: a plugin together with \"type\" or \"security\" is not supported; use a link \
             with one of them"
        );
        assert_eq!(
            err(&format!("{BASE}?type=kcp")),
            "ss: parameter \"type\" is \"kcp\", expected tcp, ws, grpc, h2, httpupgrade or xhttp"
        );
        assert_eq!(
            err("ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg@192.0.2.1"),
            "ss: missing port"
        );
    }

    #[test]
    fn shadowsocks_2022_keys_are_checked_and_normalised() {
        // 16 bytes 0..16: padded standard base64 is kept, unpadded and URL-safe are re-encoded.
        let padded = "AAECAwQFBgcICQoLDA0ODw==";
        for given in [
            padded,
            "AAECAwQFBgcICQoLDA0ODw",
            "AAECAwQFBgcICQoLDA0ODw%3D%3D",
        ] {
            let link = parse(&format!(
                "ss://2022-blake3-aes-128-gcm:{given}@192.0.2.1:8388"
            ))
            .unwrap();
            assert_eq!(
                link.outbound.protocol,
                ss(ShadowsocksMethod::Blake3Aes128Gcm, padded),
                "{given}"
            );
        }
        let multi = parse(&format!(
            "ss://2022-blake3-aes-128-gcm:{padded}%3A{padded}@192.0.2.1:8388"
        ))
        .unwrap();
        let both = format!("{padded}:{padded}");
        assert_eq!(
            multi.outbound.protocol,
            ss(ShadowsocksMethod::Blake3Aes128Gcm, &both)
        );
        assert_eq!(
            err("ss://2022-blake3-aes-128-gcm:bm90LWEta2V5@192.0.2.1:8388"),
            "ss: password (the 2022-blake3-aes-128-gcm key) decodes to 9 bytes, expected 16; \
             xray, sing-box and mihomo refuse it at start; use the server's key: 16 random \
             bytes in base64, e.g. from `openssl rand -base64 16`"
        );
        assert_eq!(
            err(&format!(
                "ss://2022-blake3-aes-256-gcm:{padded}@192.0.2.1:8388"
            )),
            "ss: password (the 2022-blake3-aes-256-gcm key) decodes to 16 bytes, expected 32; \
             xray, sing-box and mihomo refuse it at start; use the server's key: 32 random \
             bytes in base64, e.g. from `openssl rand -base64 32`"
        );
        assert!(
            err("ss://2022-blake3-chacha20-poly1305:not%20base64!@192.0.2.1:8388")
                .starts_with("ss: password (the 2022-blake3-chacha20-poly1305 key) is not base64;")
        );
        assert!(err(&format!(
            "ss://2022-blake3-aes-128-gcm:{padded}%3Anope@192.0.2.1:8388"
        ))
        .starts_with("ss: password key 2 (of the 2022-blake3-aes-128-gcm keys) decodes to 3 bytes, expected 16;"));
        let k32 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(err(&format!(
            "ss://2022-blake3-chacha20-poly1305:{k32}%3A{k32}@192.0.2.1:8388"
        ))
        .starts_with("ss: password (2 keys joined by ':') is a multi-user key list"));
        // The older AEAD methods take any password.
        assert!(parse("ss://aes-128-gcm:not%20a%20key@192.0.2.1:8388").is_ok());
    }
}
