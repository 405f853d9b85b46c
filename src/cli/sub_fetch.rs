//! Fetching for `sub` and `config import URL`: the fetch options from settings, the
//! subscription's own overrides and `XRAT_CA_FILE`, and the session's SOCKS address for
//! `--via-proxy` (from the daemon's status).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::rpc::{call, payload};
use super::CliError;
use crate::ipc::client::READ_TIMEOUT_DEFAULT;
use crate::ipc::protocol::{Request, RuntimeStatusPayload};
use crate::links::ParsedLink;
use crate::paths::Paths;
use crate::settings::Settings;
use crate::subs::{fetch, parse_body, FetchOptions, Format, UserInfo};

/// The environment variable naming a CA file for subscriptions without `--ca`.
pub const CA_FILE_ENV: &str = "XRAT_CA_FILE";

/// Where and how to fetch one URL.
pub struct Source<'a> {
    /// The URL.
    pub url: &'a str,
    /// Through the session.
    pub via_proxy: bool,
    /// A CA file (else `XRAT_CA_FILE`).
    pub ca_file: Option<&'a str>,
    /// A user-agent (else `subscriptions.user_agent`).
    pub user_agent: Option<&'a str>,
}

/// A fetched and parsed body.
pub struct Body {
    /// Which format it was.
    pub format: Format,
    /// Good entries: (label, link).
    pub links: Vec<(String, ParsedLink)>,
    /// Bad entries: `label: reason`.
    pub failed: Vec<String>,
    /// The provider's traffic and expiry.
    pub userinfo: Option<UserInfo>,
}

/// Fetches and parses `source`. An error leaves nothing changed; a body with entries but no
/// usable one is bad content too (an update would otherwise drop every member).
pub fn fetch_body(
    paths: &Paths,
    settings: &Settings,
    source: &Source<'_>,
) -> Result<Body, CliError> {
    let s = &settings.subscriptions;
    let ca_file = source.ca_file.map(PathBuf::from).or_else(|| {
        std::env::var_os(CA_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let socks_proxy = if source.via_proxy {
        Some(session_socks(paths)?)
    } else {
        None
    };
    let options = FetchOptions {
        url: source.url.to_owned(),
        ca_file,
        user_agent: source.user_agent.unwrap_or(&s.user_agent).to_owned(),
        socks_proxy,
        timeout_secs: s.timeout_secs,
        body_bytes_max: s.body_bytes_max,
        redirects_max: s.redirects_max,
    };
    let fetched = fetch(&options)?;
    let parsed = parse_body(&fetched.body, source.url)?;
    let mut body = Body {
        format: parsed.format,
        links: Vec::new(),
        failed: Vec::new(),
        userinfo: fetched.userinfo,
    };
    for entry in parsed.entries {
        match entry.result {
            Ok(link) => body.links.push((entry.label, link)),
            Err(e) => body.failed.push(format!("{}: {e}", entry.label)),
        }
    }
    if body.links.is_empty() {
        let first = body
            .failed
            .first()
            .cloned()
            .unwrap_or_else(|| "no entries".into());
        return Err(crate::subs::SubsError::BadContent {
            origin: source.url.to_owned(),
            detail: format!(
                "{} with no usable entry ({} failed; first: {first})",
                parsed.format.as_str(),
                body.failed.len()
            ),
        }
        .into());
    }
    Ok(body)
}

/// The SOCKS address of the running session: the front's in front mode, else the core's.
fn session_socks(paths: &Paths) -> Result<SocketAddr, CliError> {
    let status: RuntimeStatusPayload =
        payload(call(paths, Request::RuntimeStatus, READ_TIMEOUT_DEFAULT)?)?;
    let addr = status
        .front_socks_addr
        .clone()
        .or(status.socks_addr.clone());
    let running = matches!(status.runtime_status.as_str(), "running" | "degraded");
    match addr.filter(|_| running).and_then(|a| a.parse().ok()) {
        Some(addr) => Ok(addr),
        None => Err(CliError::Daemon(format!(
            "--via-proxy needs a running session, but the daemon's session is {}; connect one with `xrat connect ID`, or fetch without --via-proxy",
            status.runtime_status
        ))),
    }
}
