//! `[subscriptions]` of config.toml: fetching provider URLs (`xrat sub`) and the daemon's
//! timed refresh. Kept beside settings.rs, which re-exports it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{SettingsError, DURATION_SECS_MAX, TIMEOUT_MS_MAX};

/// `[subscriptions]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// Refresh period of a subscription added without `--interval`.
    pub interval_secs: u64,
    /// How often the daemon looks for due subscriptions (and runs `xrat sub update --due`).
    pub check_interval_secs: u64,
    /// Whole-fetch deadline (connect, TLS, redirects, body).
    pub timeout_secs: u64,
    /// Largest body accepted.
    pub body_bytes_max: u64,
    /// Redirects followed.
    pub redirects_max: u32,
    /// `User-Agent` sent when a subscription has none of its own.
    pub user_agent: String,
    /// The daemon kills a refresh run that takes longer than this.
    pub refresh_timeout_secs: u64,
}

/// The default `subscriptions.user_agent`.
pub const DEFAULT_USER_AGENT: &str = concat!("xrat/", env!("CARGO_PKG_VERSION"));
/// Smallest `subscriptions.body_bytes_max`: below this not even a small list fits.
pub const BODY_BYTES_MIN: u64 = 1024;

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            interval_secs: 86_400,
            check_interval_secs: 300,
            timeout_secs: 30,
            body_bytes_max: 8 << 20,
            redirects_max: 5,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            refresh_timeout_secs: 600,
        }
    }
}

impl SubscriptionSettings {
    /// Range checks of `[subscriptions]`.
    pub(super) fn validate(&self, path: &Path) -> Result<(), SettingsError> {
        use crate::subs::fetch::{BODY_BYTES_LIMIT, FETCH_TIMEOUT_SECS_MAX, REDIRECTS_LIMIT};
        const _: () = assert!(BODY_BYTES_MIN < BODY_BYTES_LIMIT);
        const _: () = assert!(FETCH_TIMEOUT_SECS_MAX * 1000 <= TIMEOUT_MS_MAX);
        let period = |v: u64| v == 0 || v > DURATION_SECS_MAX;
        const PERIOD: &str = "must be between 1 and 31622400 seconds (366 days)";
        let checks: [(&'static str, bool, String, &'static str); 7] = [
            (
                "subscriptions.interval_secs",
                period(self.interval_secs),
                self.interval_secs.to_string(),
                PERIOD,
            ),
            (
                "subscriptions.check_interval_secs",
                period(self.check_interval_secs),
                self.check_interval_secs.to_string(),
                PERIOD,
            ),
            (
                "subscriptions.timeout_secs",
                self.timeout_secs == 0 || self.timeout_secs > FETCH_TIMEOUT_SECS_MAX,
                self.timeout_secs.to_string(),
                "must be between 1 and 600 seconds",
            ),
            (
                "subscriptions.body_bytes_max",
                !(BODY_BYTES_MIN..=BODY_BYTES_LIMIT).contains(&self.body_bytes_max),
                self.body_bytes_max.to_string(),
                "must be between 1024 and 67108864 (64 MiB)",
            ),
            (
                "subscriptions.redirects_max",
                self.redirects_max > REDIRECTS_LIMIT,
                self.redirects_max.to_string(),
                "must be between 0 and 20",
            ),
            (
                "subscriptions.user_agent",
                self.user_agent.is_empty() || self.user_agent.chars().any(|c| c.is_control()),
                format!("{:?}", self.user_agent),
                "must be non-empty text without control characters",
            ),
            (
                "subscriptions.refresh_timeout_secs",
                self.refresh_timeout_secs == 0
                    || self.refresh_timeout_secs > FETCH_TIMEOUT_SECS_MAX * 6,
                self.refresh_timeout_secs.to_string(),
                "must be between 1 and 3600 seconds",
            ),
        ];
        match checks.into_iter().find(|(_, bad, _, _)| *bad) {
            Some((key, _, value, reason)) => Err(SettingsError::Value {
                path: path.to_path_buf(),
                key,
                value,
                reason,
            }),
            None => Ok(()),
        }
    }
}
