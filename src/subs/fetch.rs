//! One bounded HTTP(S) GET of a subscription URL: ureq with rustls, the system's trust store
//! plus an optional private CA, a whole-request deadline, a body size limit and a redirect
//! limit. Optionally through a SOCKS5 proxy (the running session's port).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::SubsError;

/// Largest `subscriptions.body_bytes_max` settings accept.
pub const BODY_BYTES_LIMIT: u64 = 64 << 20;
/// Largest `subscriptions.redirects_max`.
pub const REDIRECTS_LIMIT: u32 = 20;
/// Largest `subscriptions.timeout_secs`.
pub const FETCH_TIMEOUT_SECS_MAX: u64 = 600;
/// Response header bytes accepted (ureq's own limit, named here for the docs).
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
const _: () = assert!(HEADER_BYTES_MAX as u64 <= BODY_BYTES_LIMIT);

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The URL (http or https).
    pub url: String,
    /// A PEM file of extra trusted certificates.
    pub ca_file: Option<PathBuf>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Fetch through this SOCKS5 proxy (names resolved by the proxy).
    pub socks_proxy: Option<SocketAddr>,
    /// Whole-request deadline.
    pub timeout_secs: u64,
    /// Body size limit.
    pub body_bytes_max: u64,
    /// Redirects followed.
    pub redirects_max: u32,
}

/// The `subscription-userinfo` header: traffic used and allowed, and the plan's end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// Bytes uploaded.
    pub upload: Option<u64>,
    /// Bytes downloaded.
    pub download: Option<u64>,
    /// Bytes allowed.
    pub total: Option<u64>,
    /// Unix seconds the plan ends.
    pub expire: Option<u64>,
}

impl UserInfo {
    /// Parses `upload=1; download=2; total=3; expire=4` (any order, unknown keys ignored).
    pub fn parse(header: &str) -> Option<UserInfo> {
        let mut info = UserInfo::default();
        for part in header.split(';') {
            let Some((key, value)) = part.split_once('=') else {
                continue;
            };
            // Some providers send floats ("1.5e9") or empty values: keep what is a number.
            let value = value.trim().parse::<f64>().ok().map(|v| v.max(0.0) as u64);
            match key.trim().to_ascii_lowercase().as_str() {
                "upload" => info.upload = value,
                "download" => info.download = value,
                "total" => info.total = value,
                "expire" => info.expire = value.filter(|v| *v > 0),
                _ => {}
            }
        }
        (info != UserInfo::default()).then_some(info)
    }
}

/// A fetched body.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// The `subscription-userinfo` header, when present.
    pub userinfo: Option<UserInfo>,
}

/// Fetches `options.url`.
pub fn fetch(options: &FetchOptions) -> Result<Fetched, SubsError> {
    let url = options.url.as_str();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url::Url::parse(url).is_err()
    {
        return Err(SubsError::BadUrl { url: url.into() });
    }
    let proxy = match options.socks_proxy {
        Some(addr) => {
            Some(ureq::Proxy::new(&format!("socks5h://{addr}")).map_err(|e| transport(url, &e))?)
        }
        None => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(options.timeout_secs)))
        .max_redirects(options.redirects_max)
        .max_response_header_size(HEADER_BYTES_MAX)
        .user_agent(options.user_agent.as_str())
        .tls_config(tls_config(options.ca_file.as_deref())?)
        // Environment proxies are not used: --via-proxy says which proxy, and a stray
        // `https_proxy` must not send a provider token elsewhere.
        .proxy(proxy)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| classify(options, e))?;
    let userinfo = response
        .headers()
        .get("subscription-userinfo")
        .and_then(|v| v.to_str().ok())
        .and_then(UserInfo::parse);
    let bytes = response
        .body_mut()
        .with_config()
        .limit(options.body_bytes_max)
        .read_to_vec()
        .map_err(|e| classify(options, e))?;
    Ok(Fetched {
        body: String::from_utf8_lossy(&bytes).into_owned(),
        userinfo,
    })
}

/// The system's roots, plus the CA file's certificates.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<TlsConfig, SubsError> {
    let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if let Some(path) = ca_file {
        let ca_error = |detail: String| SubsError::CaFile {
            path: path.to_path_buf(),
            detail,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let mut found = 0;
        for item in ureq::tls::parse_pem(&pem) {
            if let ureq::tls::PemItem::Certificate(cert) =
                item.map_err(|e| ca_error(e.to_string()))?
            {
                roots.push(cert);
                found += 1;
            }
        }
        if found == 0 {
            return Err(ca_error("no PEM certificate in it".into()));
        }
    }
    // Without any system store (a minimal container) Mozilla's roots stand in.
    let roots = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(roots))
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

fn classify(options: &FetchOptions, error: ureq::Error) -> SubsError {
    let url = options.url.clone();
    match error {
        ureq::Error::StatusCode(status) => SubsError::Status {
            url,
            status,
            hint: SubsError::status_hint(status),
        },
        ureq::Error::Timeout(_) => SubsError::Timeout {
            url,
            secs: options.timeout_secs,
        },
        ureq::Error::BodyExceedsLimit(limit) => SubsError::TooLarge { url, limit },
        ureq::Error::TooManyRedirects => SubsError::Redirects {
            url,
            max: options.redirects_max,
        },
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => SubsError::Timeout {
            url,
            secs: options.timeout_secs,
        },
        other => {
            let mut e = transport(&url, &other);
            if options.socks_proxy.is_some() {
                if let SubsError::Transport { hint, .. } = &mut e {
                    *hint = "; check that the session runs (`xrat status`) or drop --via-proxy";
                }
            }
            e
        }
    }
}

fn transport(url: &str, error: &ureq::Error) -> SubsError {
    const CA_HINT: &str = "; if the server uses a private CA, pass its certificate with --ca FILE";
    let detail = error.to_string();
    let hint = match error {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => CA_HINT,
        // rustls reports a refused certificate through the stream, as an I/O error.
        ureq::Error::Io(_) if detail.contains("certificate") => CA_HINT,
        ureq::Error::HostNotFound => {
            "; check the host name, or fetch through the session with --via-proxy"
        }
        ureq::Error::ConnectionFailed => {
            "; the server is unreachable: check the URL, or use --via-proxy"
        }
        _ => "",
    };
    SubsError::Transport {
        url: url.to_owned(),
        detail,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_header() {
        let info = UserInfo::parse(
            "upload=455727941; download=6174315083; total=1073741824000; expire=1714521600",
        )
        .unwrap();
        assert_eq!(info.upload, Some(455_727_941));
        assert_eq!(info.total, Some(1_073_741_824_000));
        assert_eq!(info.expire, Some(1_714_521_600));
        assert_eq!(UserInfo::parse("junk"), None);
        assert_eq!(
            UserInfo::parse("total=1.5e3;expire=").unwrap().total,
            Some(1500)
        );
    }

    #[test]
    fn refuses_other_schemes() {
        let options = FetchOptions {
            url: "ftp://example.com/x".into(),
            ca_file: None,
            user_agent: "t".into(),
            socks_proxy: None,
            timeout_secs: 1,
            body_bytes_max: 10,
            redirects_max: 0,
        };
        assert!(matches!(fetch(&options), Err(SubsError::BadUrl { .. })));
    }
}
