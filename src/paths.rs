//! The XRAT root and every path derived from it (DESIGN §2).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Longest socket path `sun_path` can hold (108 bytes including the trailing NUL).
pub const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Path failures.
#[derive(Debug, Error)]
pub enum PathsError {
    /// None of `$XRAT_ROOT`, `$XDG_CONFIG_HOME` and `$HOME` is set.
    #[error("cannot find the xrat root: set XRAT_ROOT (or XDG_CONFIG_HOME or HOME) to a writable directory")]
    NoRoot,
    /// The socket path does not fit in `sun_path`.
    #[error("socket path {} is {len} bytes, longer than the {SOCKET_PATH_BYTES_MAX} bytes a Unix socket path may have; set XRAT_ROOT to a shorter directory", path.display())]
    SocketPathTooLong {
        /// The offending path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A directory could not be created or secured.
    #[error("cannot prepare directory {}; check that its parent exists and is writable", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Every file location xrat uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The XRAT root.
    pub root: PathBuf,
}

impl Paths {
    /// Resolves the root from the environment: `$XRAT_ROOT`, else `$XDG_CONFIG_HOME/xrat`,
    /// else `~/.config/xrat`.
    pub fn from_env() -> Result<Paths, PathsError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let root = if let Some(root) = var("XRAT_ROOT") {
            PathBuf::from(root)
        } else if let Some(config) = var("XDG_CONFIG_HOME") {
            PathBuf::from(config).join("xrat")
        } else if let Some(home) = var("HOME") {
            PathBuf::from(home).join(".config").join("xrat")
        } else {
            return Err(PathsError::NoRoot);
        };
        Ok(Paths::at(root))
    }

    /// Paths under an explicit root.
    pub fn at(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }

    /// `<root>/config.toml`.
    pub fn settings_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `<root>/xrat.db`.
    pub fn database(&self) -> PathBuf {
        self.root.join("xrat.db")
    }

    /// `<root>/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `<root>/logs/daemon.log`.
    pub fn daemon_log(&self) -> PathBuf {
        self.logs_dir().join("daemon.log")
    }

    /// `<root>/runtime`, mode 0700.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// `<root>/runtime/daemon.sock`.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("daemon.sock")
    }

    /// `<root>/runtime/daemon.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.runtime_dir().join("daemon.lock")
    }

    /// The socket path, checked against `sun_path`.
    pub fn checked_socket(&self) -> Result<PathBuf, PathsError> {
        let path = self.socket();
        let len = path.as_os_str().len();
        if len > SOCKET_PATH_BYTES_MAX {
            return Err(PathsError::SocketPathTooLong { path, len });
        }
        Ok(path)
    }

    /// Creates the root and `logs/` (0700 when new) and `runtime/` (always 0700).
    pub fn create_dirs(&self) -> Result<(), PathsError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let create = |path: &Path, mode: u32, force: bool| -> Result<(), PathsError> {
            let failed = |source| PathsError::CreateDir {
                path: path.to_path_buf(),
                source,
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .map_err(failed)?;
            if force {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(failed)?;
            }
            Ok(())
        };
        // The root may be a directory the user chose; only the runtime dir is forced private.
        create(&self.root, 0o700, false)?;
        create(&self.logs_dir(), 0o700, false)?;
        create(&self.runtime_dir(), 0o700, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_socket_paths_are_named() {
        let paths = Paths::at(format!("/tmp/{}", "d".repeat(120)));
        let err = paths.checked_socket().unwrap_err().to_string();
        assert!(err.contains(&paths.socket().display().to_string()));
        assert!(err.contains("set XRAT_ROOT to a shorter directory"));
        assert!(Paths::at("/tmp/x").checked_socket().is_ok());
    }
}
