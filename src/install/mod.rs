//! systemd user units for the daemon (its service and its socket unit) and the API: rendering from `packaging/systemd/*.in`, the
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
    install_plan, install_units, uninstall_plan, InstallEnv, InstallOptions, Plan, Step,
    UNIT_FILE_MODE,
};
pub use render::{render, render_socket, unit_word, RenderError};

/// The template of the daemon unit.
pub const DAEMON_TEMPLATE: &str = include_str!("../../packaging/systemd/xrat-daemon.service.in");
/// The template of the daemon's socket unit (socket activation).
pub const SOCKET_TEMPLATE: &str = include_str!("../../packaging/systemd/xrat-daemon.socket.in");
/// The template of the API unit.
pub const API_TEMPLATE: &str = include_str!("../../packaging/systemd/xrat-api.service.in");

/// One of the units xrat installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `xrat-daemon.service`: `xrat daemon run-server`.
    Daemon,
    /// `xrat-daemon.socket`: the daemon's listeners, held by systemd and passed to the service.
    Socket,
    /// `xrat-api.service`: `xrat api serve`.
    Api,
}

impl Unit {
    /// Every unit, in install order: the socket unit starts before the service so that the
    /// service is passed its listeners, and the API depends on the daemon.
    pub const ALL: [Unit; 3] = [Unit::Socket, Unit::Daemon, Unit::Api];
    /// The order units are stopped and removed in: the API (a client of the daemon), then the
    /// socket unit, so that no client can start the daemon again once its service stops.
    pub const STOP_ORDER: [Unit; 3] = [Unit::Api, Unit::Socket, Unit::Daemon];

    /// The unit's name, as systemctl knows it.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Daemon => "xrat-daemon.service",
            Unit::Socket => "xrat-daemon.socket",
            Unit::Api => "xrat-api.service",
        }
    }

    /// What the unit runs, for messages ("Daemon installed successfully.").
    pub fn label(self) -> &'static str {
        match self {
            Unit::Daemon => "Daemon",
            Unit::Socket => "Daemon socket",
            Unit::Api => "API",
        }
    }

    /// The embedded template.
    pub fn template(self) -> &'static str {
        match self {
            Unit::Daemon => DAEMON_TEMPLATE,
            Unit::Socket => SOCKET_TEMPLATE,
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
    fn templates_carry_their_placeholders() {
        for unit in [Unit::Daemon, Unit::Api] {
            assert!(unit.template().contains("@XRAT_EXE@"), "{}", unit.name());
            assert!(unit.template().contains("@XRAT_ROOT@"), "{}", unit.name());
        }
        for name in [
            "@XRAT_SOCKET@",
            "@XRAT_SOCKS@",
            "@XRAT_HTTP@",
            "@XRAT_SOCKET_MODE@",
            "@XRAT_SOCKET_GROUP@",
            "@XRAT_DIR_MODE@",
        ] {
            assert!(SOCKET_TEMPLATE.contains(name), "{name}");
        }
        assert!(SOCKET_TEMPLATE.contains("\nService=xrat-daemon.service\n"));
    }
}
