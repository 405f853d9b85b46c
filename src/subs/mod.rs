//! Subscriptions: fetching a provider's URL over HTTP(S) ([`fetch`]) and reading its body in any
//! of the common formats ([`formats`]) into share links. The store keeps subscriptions and their
//! member configs (`store::subscriptions`); the CLI's `sub` commands tie them together.
//!
//! A member is known by its identity key ([`identity_key`]): scheme, server, port, credentials
//! and transport, not its name or link text, so a node the provider renames is an update.

mod clash;
pub mod fetch;
pub mod formats;
mod node;
mod singbox;

use std::path::PathBuf;

use thiserror::Error;

use crate::links::Outbound;

pub use fetch::{fetch, FetchOptions, Fetched, UserInfo};
pub use formats::{parse_body, Entry, Format, Parsed};

/// Subscription failures. Each names the URL (or file) and what to do.
#[derive(Debug, Error)]
pub enum SubsError {
    /// Not an http:// or https:// URL.
    #[error(
        "{url:?} is not an http:// or https:// URL; pass the subscription URL your provider gave"
    )]
    BadUrl {
        /// As given.
        url: String,
    },
    /// The body went past the size limit.
    #[error("{url}: the body is larger than {limit} bytes (`subscriptions.body_bytes_max`); check the URL, or raise the limit in config.toml")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The whole fetch took longer than allowed.
    #[error("{url}: no complete answer within {secs} s (`subscriptions.timeout_secs`); the server is slow or blocked: retry later, raise the limit, or fetch through the session with --via-proxy")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        secs: u64,
    },
    /// More redirects than allowed (usually a loop).
    #[error("{url}: more than {max} redirects, probably a redirect loop; open the URL in a browser to see where it leads and use the final address")]
    Redirects {
        /// The URL.
        url: String,
        /// The limit.
        max: u32,
    },
    /// A non-2xx status.
    #[error("{url}: the server answered HTTP {status}{hint}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// What to do.
        hint: &'static str,
    },
    /// Connecting, TLS or reading failed.
    #[error("cannot fetch {url}: {detail}{hint}")]
    Transport {
        /// The URL.
        url: String,
        /// ureq's description.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
    /// The `--ca` file is unreadable or holds no certificate.
    #[error("CA file {}: {detail}; pass a PEM file of the certificate that signed the server's (with --ca or XRAT_CA_FILE)", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The body is in no known format.
    #[error("{origin}: not a subscription: {detail}; check that the URL is the subscription link (some providers answer per client: try --user-agent clash or --user-agent v2rayN)")]
    BadContent {
        /// The URL or file.
        origin: String,
        /// What was found.
        detail: String,
    },
}

impl SubsError {
    /// The hint after a status code.
    pub(crate) fn status_hint(status: u16) -> &'static str {
        match status {
            404 | 410 => "; check the URL (providers change them when a plan is renewed)",
            401 | 403 => "; the provider refused the request: check the token in the URL, or try another --user-agent",
            429 => "; the provider rate-limits fetches: retry later or raise --interval",
            500..=599 => "; the provider's server failed: retry later",
            _ => "; check the URL",
        }
    }
}

/// The identity of a node: what makes two entries the same server for the same account.
/// Names, link text and TLS details are left out so that they can change as an update.
pub fn identity_key(outbound: &Outbound) -> String {
    let scheme = crate::store::scheme_of(&outbound.protocol);
    // The protocol with every credential (a Shadowsocks cipher is part of the account too).
    // Plain data: serialising cannot fail.
    let credentials = serde_json::to_string(&outbound.protocol).expect("protocol serializes");
    let transport = serde_json::to_string(&outbound.transport).expect("transport serializes");
    format!(
        "{scheme}|{}|{}|{credentials}|{transport}",
        outbound.server.to_ascii_lowercase(),
        outbound.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::parse_link;

    #[test]
    fn identity_ignores_name_and_tls_details() {
        let a = parse_link("trojan://pw@T.example:443?sni=a.example#A").unwrap();
        let b = parse_link("trojan://pw@t.example:443?sni=b.example#B").unwrap();
        let c = parse_link("trojan://pw2@t.example:443#A").unwrap();
        assert_eq!(identity_key(&a.outbound), identity_key(&b.outbound));
        assert_ne!(identity_key(&a.outbound), identity_key(&c.outbound));
    }
}
