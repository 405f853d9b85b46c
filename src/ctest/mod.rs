//! Testing stored configs (issue 12 part 2): the result vocabulary shared by the CLI's
//! standalone run ([`standalone`]), the daemon's `config_test` request and the rotation's batch
//! test, and the limits `xrat config test` enforces.

pub mod standalone;

use serde::{Deserialize, Serialize};

use crate::store::NewConfigTest;

/// `--concurrency` default: probes in flight at once.
pub const CONCURRENCY_DEFAULT: u32 = 8;
/// `--concurrency` upper bound (the daemon's probe table holds `PROBES_MAX` = 512).
pub const CONCURRENCY_MAX: u32 = 64;
/// `--timeout` default, ms: one probe's whole deadline.
pub const TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// `--timeout` lower bound, ms.
pub const TIMEOUT_MS_MIN: u64 = 100;
/// `--timeout` upper bound, ms.
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// Configs one `config test` (or one `config_test` request) may name.
pub const CONFIGS_MAX: usize = 1024;

/// Why a config failed its test, as a short stable name (`error_kind` in JSON and the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No installed core can run it, or it is disabled/unknown.
    Unsupported,
    /// The test core did not start or did not listen in time.
    CoreFailed,
    /// The SOCKS inbound refused, or a socket error.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// The core answered the SOCKS5 CONNECT with a failure (the remote is unreachable).
    SocksFailure,
    /// The target answered a status outside 2xx/3xx.
    HttpStatus,
    /// The proxy closed the connection before the status line.
    Closed,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The wire and database name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::CoreFailed => "core_failed",
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::SocksFailure => "socks_failure",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Closed => "closed",
            ErrorKind::Other => "other",
        }
    }

    /// Classifies a probe's failure message (src/probe.rs and the reactor's probe table word
    /// them; this is the one place that reads them back).
    pub fn classify(error: &str) -> ErrorKind {
        if error.starts_with("no answer within") || error.contains("timed out") {
            ErrorKind::Timeout
        } else if error.contains("SOCKS5 CONNECT to") {
            ErrorKind::SocksFailure
        } else if error.contains(" answered HTTP ") {
            ErrorKind::HttpStatus
        } else if error.contains("closed the connection") {
            ErrorKind::Closed
        } else if error.contains("refused") || error.contains("connecting") {
            ErrorKind::Refused
        } else if error.contains("core") {
            ErrorKind::CoreFailed
        } else {
            ErrorKind::Other
        }
    }
}

/// One config's result: what `config test --json` prints per config and what is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestOutcome {
    /// The config.
    pub config_id: i64,
    /// Whether the probe through it passed.
    pub ok: bool,
    /// Latency in ms when it passed.
    pub latency_ms: Option<u64>,
    /// Why it failed.
    pub error_kind: Option<ErrorKind>,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// Unix seconds when the probe ended.
    pub at: u64,
}

impl TestOutcome {
    /// A pass.
    pub fn passed(config_id: i64, latency_ms: u64, at: u64) -> TestOutcome {
        TestOutcome {
            config_id,
            ok: true,
            latency_ms: Some(latency_ms),
            error_kind: None,
            error: None,
            at,
        }
    }

    /// A failure of `kind`.
    pub fn failed(config_id: i64, kind: ErrorKind, error: String, at: u64) -> TestOutcome {
        TestOutcome {
            config_id,
            ok: false,
            latency_ms: None,
            error_kind: Some(kind),
            error: Some(error),
            at,
        }
    }

    /// From a probe verdict (the error classified).
    pub fn from_probe(config_id: i64, result: &Result<u64, String>, at: u64) -> TestOutcome {
        match result {
            Ok(ms) => TestOutcome::passed(config_id, *ms, at),
            Err(why) => TestOutcome::failed(config_id, ErrorKind::classify(why), why.clone(), at),
        }
    }

    /// The row to store; `source` is `cli`, `daemon` or `rotation`.
    pub fn record(&self, source: &'static str) -> NewConfigTest {
        NewConfigTest {
            config_id: self.config_id,
            at: self.at,
            latency_ms: self.latency_ms,
            error_kind: self.error_kind.map(|k| k.name().to_string()),
            error: self.error.clone(),
            source,
        }
    }
}

/// The options of one test run, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOptions {
    /// The probe target (`--url`, else `health.probe_url`).
    pub url: String,
    /// One probe's deadline.
    pub timeout_ms: u64,
    /// Probes in flight at once.
    pub concurrency: u32,
}

/// Checks `--timeout` and `--concurrency`, naming the flag, the value and the bounds.
pub fn check_limits(timeout_ms: u64, concurrency: u32) -> Result<(), String> {
    if !(TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(format!(
            "--timeout {timeout_ms} is out of range; use {TIMEOUT_MS_MIN} to {TIMEOUT_MS_MAX} ms"
        ));
    }
    if !(1..=CONCURRENCY_MAX).contains(&concurrency) {
        return Err(format!(
            "--concurrency {concurrency} is out of range; use 1 to {CONCURRENCY_MAX}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_messages_are_classified() {
        let cases = [
            ("no answer within 500 ms", ErrorKind::Timeout),
            (
                "SOCKS5 CONNECT to 127.0.0.1:80 failed: general failure",
                ErrorKind::SocksFailure,
            ),
            ("127.0.0.1 answered HTTP 500", ErrorKind::HttpStatus),
            (
                "the proxy closed the connection during the SOCKS5 CONNECT",
                ErrorKind::Closed,
            ),
            (
                "Connection refused (os error 111) connecting to the SOCKS inbound",
                ErrorKind::Refused,
            ),
            (
                "the batch core reported no inbound for it",
                ErrorKind::CoreFailed,
            ),
            ("something new", ErrorKind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(ErrorKind::classify(text), kind, "{text}");
        }
    }

    #[test]
    fn limits_name_the_flag_and_bounds() {
        assert!(check_limits(TIMEOUT_MS_DEFAULT, CONCURRENCY_DEFAULT).is_ok());
        assert_eq!(
            check_limits(5, 1).unwrap_err(),
            "--timeout 5 is out of range; use 100 to 60000 ms"
        );
        assert_eq!(
            check_limits(1000, 0).unwrap_err(),
            "--concurrency 0 is out of range; use 1 to 64"
        );
    }
}
