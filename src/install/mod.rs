//! systemd user units for the daemon and the API: rendering from `packaging/systemd/*.in`, the
//! plan of file writes and `systemctl --user` calls that installs or removes them, and the
//! executor that carries a plan out.
//!
//! Everything but [`execute`] is pure, so the CLI can print a plan (`--dry-run`) that is exactly
//! what a real run would do, and tests can check plans without touching systemd.

mod exec;
mod plan;
mod render;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use exec::{execute, ExecError, Outcome};
pub use plan::{
    install_plan, uninstall_plan, InstallEnv, InstallOptions, Plan, Step, UNIT_FILE_MODE,
};
pub use render::{render, unit_word, RenderError};

/// The template of the daemon unit.
pub const DAEMON_TEMPLATE: &str = include_str!("../../packaging/systemd/xrat-daemon.service.in");
/// The template of the API unit.
pub const API_TEMPLATE: &str = include_str!("../../packaging/systemd/xrat-api.service.in");

/// One of the units xrat installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `xrat-daemon.service`: `xrat daemon run-server`.
    Daemon,
    /// `xrat-api.service`: `xrat api serve`.
    Api,
}

impl Unit {
    /// Every unit, in install order (the API depends on the daemon).
    pub const ALL: [Unit; 2] = [Unit::Daemon, Unit::Api];

    /// The unit's name, as systemctl knows it.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Daemon => "xrat-daemon.service",
            Unit::Api => "xrat-api.service",
        }
    }

    /// What the unit runs, for messages ("Daemon installed successfully.").
    pub fn label(self) -> &'static str {
        match self {
            Unit::Daemon => "Daemon",
            Unit::Api => "API",
        }
    }

    /// The embedded template.
    pub fn template(self) -> &'static str {
        match self {
            Unit::Daemon => DAEMON_TEMPLATE,
            Unit::Api => API_TEMPLATE,
        }
    }
}

/// The systemd user unit directory: `$XDG_CONFIG_HOME/systemd/user`, else
/// `$HOME/.config/systemd/user` (empty variables count as unset, as systemd treats them).
pub fn unit_dir(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    let config = set(xdg_config_home).or_else(|| set(home).map(|h| h.join(".config")))?;
    Some(config.join("systemd").join("user"))
}

/// [`unit_dir`] from this process's environment.
pub fn unit_dir_from_env() -> Option<PathBuf> {
    unit_dir(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The units whose files exist in `unit_dir`, in [`Unit::ALL`] order.
pub fn installed_units(unit_dir: &Path) -> Vec<Unit> {
    Unit::ALL
        .into_iter()
        .filter(|unit| unit_dir.join(unit.name()).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_dir_prefers_xdg_config_home() {
        let dir = unit_dir(Some("/x/cfg".into()), Some("/home/u".into()));
        assert_eq!(dir, Some(PathBuf::from("/x/cfg/systemd/user")));
        let dir = unit_dir(Some("".into()), Some("/home/u".into()));
        assert_eq!(dir, Some(PathBuf::from("/home/u/.config/systemd/user")));
        assert_eq!(unit_dir(None, None), None);
    }

    #[test]
    fn templates_carry_both_placeholders() {
        for unit in Unit::ALL {
            assert!(unit.template().contains("@XRAT_EXE@"), "{}", unit.name());
            assert!(unit.template().contains("@XRAT_ROOT@"), "{}", unit.name());
        }
    }
}
