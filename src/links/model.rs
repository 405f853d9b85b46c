//! The typed form of a share link. Everything here is plain data that serialises to JSON so the
//! store can persist it and the config generator can turn it into an Xray or sing-box outbound
//! without going back to the link text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The link schemes this module understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `vmess://`.
    Vmess,
    /// `vless://`.
    Vless,
    /// `trojan://`.
    Trojan,
    /// `ss://`.
    #[serde(rename = "ss")]
    Shadowsocks,
    /// `socks://` or `socks5://`.
    Socks,
    /// `hysteria2://` or `hy2://`.
    Hysteria2,
    /// `tuic://` (TUIC v5).
    Tuic,
    /// `anytls://`.
    Anytls,
    /// `http://` or `https://` (an HTTP proxy; `https` means TLS to the proxy).
    Http,
    /// `wireguard://` or `wg://`.
    Wireguard,
}

impl Scheme {
    /// The name used in messages and default link names, as written in links.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Vmess => "vmess",
            Scheme::Vless => "vless",
            Scheme::Trojan => "trojan",
            Scheme::Shadowsocks => "ss",
            Scheme::Socks => "socks",
            Scheme::Hysteria2 => "hysteria2",
            Scheme::Tuic => "tuic",
            Scheme::Anytls => "anytls",
            Scheme::Http => "http",
            Scheme::Wireguard => "wireguard",
        }
    }

    /// Looks up the text before `://`, ignoring case; `socks5` is an alias of `socks`, `hy2`
    /// of `hysteria2`.
    pub fn from_name(name: &str) -> Option<Scheme> {
        let scheme = match name.to_ascii_lowercase().as_str() {
            "vmess" => Scheme::Vmess,
            "vless" => Scheme::Vless,
            "trojan" => Scheme::Trojan,
            "ss" => Scheme::Shadowsocks,
            "socks" | "socks5" => Scheme::Socks,
            "hysteria2" | "hy2" => Scheme::Hysteria2,
            "tuic" => Scheme::Tuic,
            "anytls" => Scheme::Anytls,
            "http" | "https" => Scheme::Http,
            "wireguard" | "wg" => Scheme::Wireguard,
            _ => return None,
        };
        Some(scheme)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A share link after parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedLink {
    /// The link exactly as given (minus surrounding whitespace), kept so it can be re-shared
    /// or re-parsed by a later version that understands more of it.
    pub raw: String,
    /// The name from the link, or `<scheme> <host>:<port>` when it has none.
    pub name: String,
    /// What to connect to and how.
    pub outbound: Outbound,
}

/// One proxy server and the way to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// Protocol and its credentials.
    pub protocol: Protocol,
    /// Host name or IP address; IPv6 addresses are stored without brackets.
    pub server: String,
    /// Server port, never 0.
    pub port: u16,
    /// The stream carrying the protocol.
    pub transport: Transport,
    /// Encryption of the stream.
    pub security: Security,
}

/// Proxy protocol with its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Protocol {
    /// VMess.
    Vmess {
        /// User id, normally a UUID.
        id: String,
        /// Legacy alter id; 0 means VMess AEAD, the only kind current cores accept.
        alter_id: u16,
        /// Body cipher.
        security: VmessSecurity,
    },
    /// VLESS.
    Vless {
        /// User id, normally a UUID.
        id: String,
        /// XTLS flow such as `xtls-rprx-vision`; `None` for plain VLESS.
        flow: Option<String>,
        /// `none`, or a VLESS encryption setting passed to the core untouched.
        encryption: String,
    },
    /// Trojan.
    Trojan {
        /// The shared password, percent-decoded.
        password: String,
    },
    /// Shadowsocks (AEAD and 2022 methods only).
    Shadowsocks {
        /// Cipher.
        method: ShadowsocksMethod,
        /// Password, or the base64 key(s) for 2022 methods.
        password: String,
    },
    /// SOCKS5.
    Socks {
        /// Username and password; `None` for no authentication.
        auth: Option<SocksAuth>,
    },
    /// Hysteria 2, over QUIC. Its TLS settings are in [`Outbound::security`] (always `Tls`);
    /// [`Outbound::transport`] is always `Tcp`, meaning "the protocol's own".
    Hysteria2 {
        /// The authentication string (`user:pass` links keep both, joined by ':').
        password: String,
        /// The Salamander obfuscation password, when `obfs=salamander`.
        obfs_password: Option<String>,
    },
    /// TUIC v5, over QUIC; TLS and transport as for [`Protocol::Hysteria2`].
    Tuic {
        /// User id (UUID).
        uuid: String,
        /// Password.
        password: String,
        /// `cubic`, `new_reno` or `bbr`; `None` for the core's default.
        congestion_control: Option<String>,
        /// `native` or `quic`; `None` for the core's default.
        udp_relay_mode: Option<String>,
        /// 0-RTT handshake (`reduce_rtt=1`).
        zero_rtt: bool,
    },
    /// An HTTP proxy (CONNECT), over TCP, with TLS for `https://` links.
    Http {
        /// Username and password (basic auth); `None` for none.
        auth: Option<SocksAuth>,
    },
    /// WireGuard (UDP, its own crypto): transport `Tcp` and security `None` stand for "its own".
    Wireguard {
        /// The client's private key (base64, 32 bytes).
        private_key: String,
        /// The server peer's public key (base64, 32 bytes).
        public_key: String,
        /// Pre-shared key (base64, 32 bytes), if any.
        pre_shared_key: Option<String>,
        /// The client's IPv4 address in the tunnel, without prefix length.
        ipv4: Option<String>,
        /// The client's IPv6 address in the tunnel, without prefix length.
        ipv6: Option<String>,
        /// The three reserved bytes some servers (Cloudflare WARP) check.
        reserved: Option<[u8; 3]>,
        /// Tunnel MTU.
        mtu: Option<u16>,
    },
    /// AnyTLS, over TLS (in [`Outbound::security`], always `Tls`) on TCP.
    Anytls {
        /// Password.
        password: String,
    },
}

/// SOCKS5 username/password authentication (RFC 1929 needs both, so they travel together);
/// HTTP proxies' basic auth uses it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocksAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// VMess body ciphers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmessSecurity {
    /// Let the core pick by CPU features.
    #[serde(rename = "auto")]
    Auto,
    /// AES-128-GCM.
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    /// ChaCha20-Poly1305.
    #[serde(rename = "chacha20-poly1305")]
    Chacha20Poly1305,
    /// No body encryption, header still authenticated.
    #[serde(rename = "none")]
    None,
    /// No encryption and no authentication.
    #[serde(rename = "zero")]
    Zero,
}

impl VmessSecurity {
    /// Human list of accepted names, for error messages.
    pub(crate) const EXPECTED: &'static str = "auto, aes-128-gcm, chacha20-poly1305, none or zero";

    /// The name cores use.
    pub fn as_str(self) -> &'static str {
        match self {
            VmessSecurity::Auto => "auto",
            VmessSecurity::Aes128Gcm => "aes-128-gcm",
            VmessSecurity::Chacha20Poly1305 => "chacha20-poly1305",
            VmessSecurity::None => "none",
            VmessSecurity::Zero => "zero",
        }
    }

    /// Looks up a name, ignoring case.
    pub fn from_name(name: &str) -> Option<VmessSecurity> {
        let security = match name.to_ascii_lowercase().as_str() {
            "auto" => VmessSecurity::Auto,
            "aes-128-gcm" => VmessSecurity::Aes128Gcm,
            "chacha20-poly1305" => VmessSecurity::Chacha20Poly1305,
            "none" => VmessSecurity::None,
            "zero" => VmessSecurity::Zero,
            _ => return None,
        };
        Some(security)
    }
}

/// Shadowsocks ciphers. Stream ciphers are left out on purpose: they are broken and current
/// cores dropped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShadowsocksMethod {
    /// `aes-128-gcm`.
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    /// `aes-256-gcm`.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// `chacha20-ietf-poly1305` (links may say `chacha20-poly1305`).
    #[serde(rename = "chacha20-ietf-poly1305")]
    Chacha20IetfPoly1305,
    /// `xchacha20-ietf-poly1305` (links may say `xchacha20-poly1305`).
    #[serde(rename = "xchacha20-ietf-poly1305")]
    Xchacha20IetfPoly1305,
    /// `2022-blake3-aes-128-gcm`.
    #[serde(rename = "2022-blake3-aes-128-gcm")]
    Blake3Aes128Gcm,
    /// `2022-blake3-aes-256-gcm`.
    #[serde(rename = "2022-blake3-aes-256-gcm")]
    Blake3Aes256Gcm,
    /// `2022-blake3-chacha20-poly1305`.
    #[serde(rename = "2022-blake3-chacha20-poly1305")]
    Blake3Chacha20Poly1305,
}

impl ShadowsocksMethod {
    /// Human list of accepted names, for error messages.
    pub(crate) const EXPECTED: &'static str = "one of aes-128-gcm, aes-256-gcm, \
        chacha20-ietf-poly1305, xchacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
        2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305";

    /// The canonical name. The `-ietf-` spellings are used because both Xray and sing-box
    /// accept them, while sing-box rejects the short aliases.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowsocksMethod::Aes128Gcm => "aes-128-gcm",
            ShadowsocksMethod::Aes256Gcm => "aes-256-gcm",
            ShadowsocksMethod::Chacha20IetfPoly1305 => "chacha20-ietf-poly1305",
            ShadowsocksMethod::Xchacha20IetfPoly1305 => "xchacha20-ietf-poly1305",
            ShadowsocksMethod::Blake3Aes128Gcm => "2022-blake3-aes-128-gcm",
            ShadowsocksMethod::Blake3Aes256Gcm => "2022-blake3-aes-256-gcm",
            ShadowsocksMethod::Blake3Chacha20Poly1305 => "2022-blake3-chacha20-poly1305",
        }
    }

    /// A Shadowsocks 2022 method's key length in bytes; `None` for the older AEAD methods,
    /// whose password is any text.
    pub fn key_bytes(self) -> Option<usize> {
        match self {
            ShadowsocksMethod::Blake3Aes128Gcm => Some(16),
            ShadowsocksMethod::Blake3Aes256Gcm | ShadowsocksMethod::Blake3Chacha20Poly1305 => {
                Some(32)
            }
            _ => None,
        }
    }

    /// Looks up a name or alias, ignoring case.
    pub fn from_name(name: &str) -> Option<ShadowsocksMethod> {
        let method = match name.to_ascii_lowercase().as_str() {
            "aes-128-gcm" => ShadowsocksMethod::Aes128Gcm,
            "aes-256-gcm" => ShadowsocksMethod::Aes256Gcm,
            "chacha20-poly1305" | "chacha20-ietf-poly1305" => {
                ShadowsocksMethod::Chacha20IetfPoly1305
            }
            "xchacha20-poly1305" | "xchacha20-ietf-poly1305" => {
                ShadowsocksMethod::Xchacha20IetfPoly1305
            }
            "2022-blake3-aes-128-gcm" => ShadowsocksMethod::Blake3Aes128Gcm,
            "2022-blake3-aes-256-gcm" => ShadowsocksMethod::Blake3Aes256Gcm,
            "2022-blake3-chacha20-poly1305" => ShadowsocksMethod::Blake3Chacha20Poly1305,
            _ => return None,
        };
        Some(method)
    }
}

/// The stream under the proxy protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transport {
    /// Plain TCP (Xray also calls it `raw`).
    Tcp,
    /// WebSocket.
    Ws {
        /// Request path, `/` when the link gives none; may carry a query such as `?ed=2048`.
        path: String,
        /// `Host` header; `None` means the server address or SNI.
        host: Option<String>,
    },
    /// gRPC.
    Grpc {
        /// gRPC service name.
        service_name: String,
        /// `mode=multi`: several streams per connection.
        multi_mode: bool,
    },
    /// HTTP/2.
    H2 {
        /// Request path, `/` when the link gives none.
        path: String,
        /// Host names to pick from; empty means the server address or SNI.
        host: Vec<String>,
    },
    /// HTTP upgrade (WebSocket-like handshake, then a raw stream).
    HttpUpgrade {
        /// Request path, `/` when the link gives none.
        path: String,
        /// `Host` header; `None` means the server address or SNI.
        host: Option<String>,
    },
    /// XHTTP (Xray's SplitHTTP successor): the stream split over HTTP requests.
    Xhttp {
        /// Request path, `/` when the link gives none.
        path: String,
        /// `Host` header; `None` means the server address or SNI.
        host: Option<String>,
        /// `auto`, `packet-up`, `stream-up` or `stream-one`; `None` means auto.
        mode: Option<String>,
        /// Xray's `extra` object (padding, xmux, download settings), as JSON text.
        extra: Option<String>,
    },
    /// simple-obfs (the SIP003 `obfs-local` plugin): the stream starts like an HTTP request or
    /// a TLS handshake. Shadowsocks only.
    Obfs {
        /// `http` or `tls`.
        mode: ObfsMode,
        /// The camouflage host (`obfs-host`); `None` means the plugin's default.
        host: Option<String>,
    },
    /// ShadowTLS (the `shadow-tls=` parameter): a real TLS handshake with `host` relayed by the
    /// server, then the stream. Shadowsocks only; its security stays `None`.
    ShadowTls {
        /// Protocol version, 1 to 3.
        version: u8,
        /// The handshake server's name (the SNI the handshake carries).
        host: String,
        /// The ShadowTLS password (versions 2 and 3; empty for 1).
        password: String,
    },
}

/// What simple-obfs makes the stream look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObfsMode {
    /// An HTTP request with an upgrade.
    Http,
    /// A TLS handshake.
    Tls,
}

impl ObfsMode {
    /// The name the plugin options use.
    pub fn as_str(self) -> &'static str {
        match self {
            ObfsMode::Http => "http",
            ObfsMode::Tls => "tls",
        }
    }
}

/// Encryption of the transport stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Security {
    /// Cleartext (the protocol may still encrypt its payload).
    None,
    /// TLS.
    Tls(TlsSettings),
    /// REALITY.
    Reality(RealitySettings),
}

/// TLS client settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// Server name to send; `None` means the server address.
    pub sni: Option<String>,
    /// ALPN protocols in preference order; empty means the core's default.
    pub alpn: Vec<String>,
    /// uTLS fingerprint such as `chrome`.
    pub fingerprint: Option<String>,
    /// Skip certificate verification.
    pub allow_insecure: bool,
    /// Encrypted Client Hello: the server's ECHConfigList, base64 as in the link's `ech=`.
    /// Stored configs from before it was carried have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ech: Option<String>,
}

/// REALITY client settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealitySettings {
    /// Server's x25519 public key, base64url as in the link.
    pub public_key: String,
    /// Short id in hex; may be empty.
    pub short_id: String,
    /// Spider path used when probing.
    pub spider_x: Option<String>,
    /// Server name of the site being borrowed.
    pub sni: Option<String>,
    /// uTLS fingerprint such as `chrome`.
    pub fingerprint: Option<String>,
}
