//! Transport and security settings, read from share-link query parameters with the names
//! v2rayN and Xray use (`type`, `path`, `host`, `serviceName`, `security`, `sni`, `pbk`, ...).
//! vmess JSON fields are mapped onto the same names so there is one reader for both.

use base64::{engine::general_purpose::STANDARD, Engine};
use url::Url;

use super::common::decode_base64;
use super::error::{quote, LinkError};
use super::model::{RealitySettings, Scheme, Security, TlsSettings, Transport};

const TRANSPORTS: &str = "tcp, ws, grpc, h2, httpupgrade or xhttp";
const XHTTP_MODES: [&str; 4] = ["auto", "packet-up", "stream-up", "stream-one"];
const XHTTP_MODE_EXPECTED: &str = "auto, packet-up, stream-up or stream-one";
const XHTTP_EXTRA_EXPECTED: &str = "a JSON object";
const SECURITIES: &str = "none, tls or reality";
const FLAGS: &str = "0, 1, true or false";
const HEADER_TYPES: &str = "none (http header obfuscation is not supported)";
const PUBLIC_KEY: &str = "a base64url x25519 public key (32 bytes)";
const ECH_CONFIG_LIST: &str = "the server's ECHConfigList in base64 (as `sing-box generate \
     ech-keypair` prints it); a DNS name to look it up is not supported";
const SHORT_ID: &str = "an even number of hex digits, at most 16";

/// One named value and how to refer to it in messages.
#[derive(Debug)]
struct Param {
    key: String,
    value: String,
    label: String,
}

/// Link settings by name. Lookup ignores key case and empty values, because producers differ
/// on both and an empty `sni=` means "not set" everywhere.
#[derive(Debug)]
pub(crate) struct Params {
    scheme: Scheme,
    items: Vec<Param>,
}

impl Params {
    /// An empty set, to be filled with [`Params::insert`].
    pub(crate) fn new(scheme: Scheme) -> Params {
        Params {
            scheme,
            items: Vec::new(),
        }
    }

    /// The query of `url`, decoded the way Xray decodes it (`+` is a space).
    pub(crate) fn from_url(scheme: Scheme, url: &Url) -> Params {
        let items = url
            .query_pairs()
            .map(|(key, value)| Param {
                label: format!("parameter \"{}\"", quote(&key)),
                key: key.into_owned(),
                value: value.into_owned(),
            })
            .collect();
        Params { scheme, items }
    }

    /// Adds `value` under the query name `key`; messages call it `field "<field>"` so they
    /// point at what the user actually has in the vmess JSON.
    pub(crate) fn insert(&mut self, key: &str, field: &str, value: String) {
        self.items.push(Param {
            key: key.to_owned(),
            value,
            label: format!("field \"{field}\""),
        });
    }

    /// The first non-empty value for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|param| param.value.as_str())
    }

    fn find(&self, key: &str) -> Option<&Param> {
        self.items
            .iter()
            .find(|param| param.key.eq_ignore_ascii_case(key) && !param.value.is_empty())
    }

    /// An `Invalid` error naming `key` the way the link spelled it.
    pub(crate) fn invalid(&self, key: &str, value: &str, expected: &'static str) -> LinkError {
        let what = match self.find(key) {
            Some(param) => param.label.clone(),
            None => format!("parameter \"{key}\""),
        };
        LinkError::invalid(self.scheme, what, value, expected)
    }

    fn owned(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_owned)
    }

    /// A boolean switch; absent means false.
    pub(crate) fn flag(&self, key: &str) -> Result<bool, LinkError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false") => Ok(false),
            Some("1" | "true") => Ok(true),
            Some(_) => Err(self.invalid(key, self.get(key).unwrap_or_default(), FLAGS)),
        }
    }

    /// A comma-separated list, blanks dropped.
    fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn path(&self) -> String {
        self.owned("path").unwrap_or_else(|| "/".to_owned())
    }
}

/// Reads `type` (default tcp) and the settings of that transport.
pub(crate) fn transport(params: &Params) -> Result<Transport, LinkError> {
    // Shadowrocket spells WebSocket `ws=1&wspath=/p` (or `obfs=websocket`) instead of
    // `type=ws&path=/p`; dropping it would give an outbound that cannot reach the server.
    let shadowrocket_ws = params.get("type").is_none()
        && (params.flag("ws").unwrap_or(false)
            || params
                .get("obfs")
                .is_some_and(|o| o.eq_ignore_ascii_case("websocket")));
    if shadowrocket_ws {
        return Ok(Transport::Ws {
            path: params.owned("wspath").unwrap_or_else(|| params.path()),
            host: params
                .owned("wshost")
                .or_else(|| params.owned("obfsParam"))
                .or_else(|| params.owned("host")),
        });
    }
    let kind = params.get("type").unwrap_or("tcp");
    let transport = match kind.to_ascii_lowercase().as_str() {
        // Xray renamed tcp to raw; panels emit either.
        "tcp" | "raw" => match params.get("headerType") {
            None => Transport::Tcp,
            Some(header) if header.eq_ignore_ascii_case("none") => Transport::Tcp,
            Some(header) => return Err(params.invalid("headerType", header, HEADER_TYPES)),
        },
        "ws" => Transport::Ws {
            path: params.path(),
            host: params.owned("host"),
        },
        "grpc" => Transport::Grpc {
            service_name: params.owned("serviceName").unwrap_or_default(),
            multi_mode: params
                .get("mode")
                .is_some_and(|mode| mode.eq_ignore_ascii_case("multi")),
        },
        "h2" | "http" => Transport::H2 {
            path: params.path(),
            host: params.list("host"),
        },
        "httpupgrade" => Transport::HttpUpgrade {
            path: params.path(),
            host: params.owned("host"),
        },
        // `splithttp` is XHTTP's name before Xray 24.11.
        "xhttp" | "splithttp" => {
            let mode = match params.get("mode").map(str::to_ascii_lowercase) {
                None => None,
                Some(mode) if XHTTP_MODES.contains(&mode.as_str()) => Some(mode),
                Some(_) => {
                    let given = params.get("mode").unwrap_or_default();
                    return Err(params.invalid("mode", given, XHTTP_MODE_EXPECTED));
                }
            };
            let extra = match params.get("extra") {
                None => None,
                Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(object)) if object.is_empty() => None,
                    Ok(serde_json::Value::Object(_)) => Some(text.to_owned()),
                    _ => return Err(params.invalid("extra", text, XHTTP_EXTRA_EXPECTED)),
                },
            };
            Transport::Xhttp {
                path: params.path(),
                host: params.owned("host"),
                mode: mode.filter(|mode| mode != "auto"),
                extra,
            }
        }
        _ => return Err(params.invalid("type", kind, TRANSPORTS)),
    };
    Ok(transport)
}

/// Reads `security` (or `default` when absent) and the TLS or REALITY settings.
pub(crate) fn security(params: &Params, default: &str) -> Result<Security, LinkError> {
    let kind = params.get("security").unwrap_or(default);
    match kind.to_ascii_lowercase().as_str() {
        "none" => Ok(Security::None),
        "tls" => tls(params),
        "reality" => reality(params),
        _ => Err(params.invalid("security", kind, SECURITIES)),
    }
}

/// The TLS settings of a link (`sni` or `peer`, `alpn`, `fp`, `allowInsecure` or `insecure`).
pub(crate) fn tls_settings(params: &Params) -> Result<TlsSettings, LinkError> {
    match tls(params)? {
        Security::Tls(settings) => Ok(settings),
        _ => unreachable!("tls() returns Security::Tls"),
    }
}

fn tls(params: &Params) -> Result<Security, LinkError> {
    // `insecure` is the older spelling; `peer` is trojan-go's name for the SNI.
    let allow_insecure = params.flag("allowInsecure")? || params.flag("insecure")?;
    Ok(Security::Tls(TlsSettings {
        sni: params.owned("sni").or_else(|| params.owned("peer")),
        alpn: params.list("alpn"),
        fingerprint: params.owned("fp"),
        allow_insecure,
        ech: ech(params)?,
    }))
}

/// `ech=`: an ECHConfigList (a 2-byte length, then that many bytes of configs). Checked here
/// because a bad list only surfaces as a handshake error in the core log. Stored in standard
/// base64, the form both sing-box's PEM block and mihomo take.
fn ech(params: &Params) -> Result<Option<String>, LinkError> {
    let Some(value) = params.get("ech").filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    // A raw '+' in a query reads as a space; base64 has no spaces, so it was a '+'.
    let restored = value.replace(' ', "+");
    let list = decode_base64(&restored).filter(|list| {
        let declared = list
            .get(..2)
            .map(|len| usize::from(u16::from_be_bytes([len[0], len[1]])));
        list.len() > 2 && declared == Some(list.len() - 2)
    });
    match list {
        Some(list) => Ok(Some(STANDARD.encode(list))),
        None => Err(params.invalid("ech", value, ECH_CONFIG_LIST)),
    }
}

fn reality(params: &Params) -> Result<Security, LinkError> {
    let public_key = params.get("pbk").ok_or(LinkError::missing(
        params.scheme,
        "parameter \"pbk\" (reality public key)",
    ))?;
    // Checked here because a bad key otherwise surfaces only as a failed handshake.
    if decode_base64(public_key).is_none_or(|key| key.len() != 32) {
        return Err(params.invalid("pbk", public_key, PUBLIC_KEY));
    }
    let short_id = params.get("sid").unwrap_or_default();
    let hex = short_id.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !hex || short_id.len() > 16 || !short_id.len().is_multiple_of(2) {
        return Err(params.invalid("sid", short_id, SHORT_ID));
    }
    Ok(Security::Reality(RealitySettings {
        public_key: public_key.to_owned(),
        short_id: short_id.to_owned(),
        spider_x: params.owned("spx"),
        sni: params.owned("sni"),
        fingerprint: params.owned("fp"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PBK: &str = "SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc";

    fn query(query: &str) -> Params {
        let url = Url::parse(&format!("vless://id@h:1?{query}")).unwrap();
        Params::from_url(Scheme::Vless, &url)
    }

    fn transport_err(text: &str) -> String {
        transport(&query(text)).unwrap_err().to_string()
    }

    fn security_err(text: &str) -> String {
        security(&query(text), "none").unwrap_err().to_string()
    }

    #[test]
    fn transports() {
        assert_eq!(transport(&query("")).unwrap(), Transport::Tcp);
        assert_eq!(
            transport(&query("type=raw&headerType=none")).unwrap(),
            Transport::Tcp
        );
        assert_eq!(
            transport(&query(
                "type=ws&path=%2Fws%3Fed%3D2048&host=cdn.example.com"
            ))
            .unwrap(),
            Transport::Ws {
                path: "/ws?ed=2048".into(),
                host: Some("cdn.example.com".into())
            }
        );
        assert_eq!(
            transport(&query("type=grpc&serviceName=svc&mode=multi")).unwrap(),
            Transport::Grpc {
                service_name: "svc".into(),
                multi_mode: true
            }
        );
        assert_eq!(
            transport(&query("type=http&host=a.example,%20b.example")).unwrap(),
            Transport::H2 {
                path: "/".into(),
                host: vec!["a.example".into(), "b.example".into()]
            }
        );
        assert_eq!(
            transport(&query("TYPE=httpupgrade&path=%2Fup&host=")).unwrap(),
            Transport::HttpUpgrade {
                path: "/up".into(),
                host: None
            }
        );
    }

    #[test]
    fn transport_errors() {
        assert_eq!(
            transport_err("type=kcp"),
            "vless: parameter \"type\" is \"kcp\", expected tcp, ws, grpc, h2, httpupgrade or xhttp"
        );
        assert_eq!(
            transport_err("type=tcp&headerType=http"),
            "vless: parameter \"headerType\" is \"http\", \
             expected none (http header obfuscation is not supported)"
        );
    }

    #[test]
    fn tls_settings() {
        let params = query("security=tls&sni=a.example&alpn=h2%2Chttp%2F1.1&fp=chrome&insecure=1");
        assert_eq!(
            security(&params, "none").unwrap(),
            Security::Tls(TlsSettings {
                sni: Some("a.example".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
                fingerprint: Some("chrome".into()),
                allow_insecure: true,
                ech: None,
            })
        );
        let Security::Tls(tls) = security(&query("peer=b.example"), "tls").unwrap() else {
            panic!("expected tls");
        };
        assert_eq!(tls.sni.as_deref(), Some("b.example"));
        assert!(!tls.allow_insecure);
        assert_eq!(
            security(&query("security="), "none").unwrap(),
            Security::None
        );
    }

    #[test]
    fn security_errors() {
        assert_eq!(
            security_err("security=xtls"),
            "vless: parameter \"security\" is \"xtls\", expected none, tls or reality"
        );
        assert_eq!(
            security_err("security=tls&allowInsecure=maybe"),
            "vless: parameter \"allowInsecure\" is \"maybe\", expected 0, 1, true or false"
        );
        assert_eq!(
            security_err("security=reality&sni=a.example"),
            "vless: missing parameter \"pbk\" (reality public key)"
        );
        assert_eq!(
            security_err("security=reality&pbk=abcd"),
            "vless: parameter \"pbk\" is \"abcd\", \
             expected a base64url x25519 public key (32 bytes)"
        );
        assert_eq!(
            security_err(&format!("security=reality&pbk={PBK}&sid=xyz")),
            "vless: parameter \"sid\" is \"xyz\", expected an even number of hex digits, at most 16"
        );
    }

    #[test]
    fn shadowrocket_websocket_spelling_is_kept() {
        let ws = |path: &str, host: Option<&str>| Transport::Ws {
            path: path.into(),
            host: host.map(str::to_owned),
        };
        assert_eq!(
            transport(&query("ws=1&wspath=%2Fray&wshost=cdn.example")).unwrap(),
            ws("/ray", Some("cdn.example"))
        );
        assert_eq!(
            transport(&query("obfs=websocket&path=%2Fw&obfsParam=h.example")).unwrap(),
            ws("/w", Some("h.example"))
        );
        assert_eq!(transport(&query("ws=true")).unwrap(), ws("/", None));
        // An explicit type wins.
        assert_eq!(transport(&query("type=tcp&ws=1")).unwrap(), Transport::Tcp);
    }

    #[test]
    fn vmess_fields_are_named_as_fields() {
        let mut params = Params::new(Scheme::Vmess);
        params.insert("type", "net", "quic".into());
        assert_eq!(
            transport(&params).unwrap_err().to_string(),
            "vmess: field \"net\" is \"quic\", expected tcp, ws, grpc, h2, httpupgrade or xhttp"
        );
    }
}
