//! Link parsing failures. Messages are lowercase, name the scheme and the offending part, and say
//! what was expected, so the CLI can print them after `line N: ` unchanged.

use thiserror::Error;

use super::model::Scheme;

/// Most characters of user input quoted in one message; links can be kilobytes long.
const MAX_QUOTED: usize = 60;

/// What the port must be, shared by every scheme.
pub(crate) const PORT_EXPECTED: &str = "a number 1-65535";

/// Why a line is not a usable share link.
///
/// Values quoted in messages are shortened and escaped; secrets (passwords, base64 payloads)
/// are never quoted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    /// The line has no `scheme://`.
    #[error("not a share link: \"{input}\"; expected <scheme>://...")]
    NotALink {
        /// The start of the line.
        input: String,
    },
    /// The scheme is not one we parse.
    #[error(
        "unknown scheme \"{scheme}\"; supported: vmess, vless, trojan, ss, socks, hysteria2 (hy2), \
         tuic, anytls, http, https, wireguard (wg)"
    )]
    UnknownScheme {
        /// The text before `://`.
        scheme: String,
    },
    /// A required part is absent or empty.
    #[error("{scheme}: missing {what}")]
    Missing {
        /// Link scheme.
        scheme: Scheme,
        /// What is missing, e.g. `port` or `user id before '@'`.
        what: &'static str,
    },
    /// A part is present but has a value we cannot use.
    #[error("{scheme}: {what} is \"{value}\", expected {expected}")]
    Invalid {
        /// Link scheme.
        scheme: Scheme,
        /// Which part, e.g. `port`, `parameter "type"`, `field "port"`.
        what: String,
        /// The value as given (shortened).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A part that must be base64 is not.
    #[error("{scheme}: {what} is not valid base64, expected {expected}")]
    Base64 {
        /// Link scheme.
        scheme: Scheme,
        /// Which part.
        what: &'static str,
        /// What the decoded text should be.
        expected: &'static str,
    },
    /// The vmess payload decoded but is not a JSON object.
    #[error("vmess: payload is not valid JSON ({detail}), expected a v2rayN JSON object")]
    Json {
        /// serde_json's description, shortened.
        detail: String,
    },
    /// A part that parses but that no core xrat runs can carry; never silently dropped.
    #[error("{scheme}: {what} is not supported; {fix}")]
    Unsupported {
        /// Link scheme.
        scheme: Scheme,
        /// What, with its value where that helps, e.g. `port hopping (ports "443-448")`.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// A value every core refuses at start (checked here so the import says so, not the
    /// first connection).
    #[error("{scheme}: {what} {why}; xray, sing-box and mihomo refuse it at start; {fix}")]
    RefusedByCores {
        /// Link scheme.
        scheme: Scheme,
        /// Which field, e.g. `password (the 2022-blake3-aes-128-gcm key)`.
        what: String,
        /// What is wrong with it (never the secret itself).
        why: String,
        /// What to do instead.
        fix: String,
    },
    /// The `url` crate rejected the link's syntax for a reason not covered above.
    #[error("{scheme}: cannot parse link: {detail}")]
    Malformed {
        /// Link scheme.
        scheme: Scheme,
        /// The `url` crate's description, e.g. `invalid IPv6 address`.
        detail: String,
    },
}

impl LinkError {
    /// `Missing` without the struct noise.
    pub(crate) fn missing(scheme: Scheme, what: &'static str) -> LinkError {
        LinkError::Missing { scheme, what }
    }

    /// `Invalid`, with the value shortened and escaped.
    pub(crate) fn invalid(
        scheme: Scheme,
        what: impl Into<String>,
        value: &str,
        expected: &'static str,
    ) -> LinkError {
        LinkError::Invalid {
            scheme,
            what: what.into(),
            value: quote(value),
            expected,
        }
    }
}

/// Escapes control characters and quotes (so a message stays on one line and its quoting is
/// unambiguous) and cuts the result to `MAX_QUOTED` characters.
pub(crate) fn quote(text: &str) -> String {
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX_QUOTED {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(MAX_QUOTED - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_shortens() {
        assert_eq!(quote("a\"b\n"), "a\\\"b\\n");
        let long = "x".repeat(200);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), MAX_QUOTED);
        assert!(quoted.ends_with('…'));
        assert_eq!(quote("🚀 ok"), "🚀 ok");
    }
}
