//! The XRAT root and every path derived from it (DESIGN §2).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub mod logs;

use thiserror::Error;

/// Mode of `logs/` and `runtime/`: only the owner may list or open what is inside.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of `runtime/` while `daemon.socket_group` is set: the group may pass through to the
/// socket but not list the directory. `create_dirs` leaves it (a CLI command must not lock the
/// group out of a running daemon); the daemon sets 0700 or this at start.
pub const SHARED_RUNTIME_DIR_MODE: u32 = 0o710;
/// Mode of every log file (`daemon.log`, `core-<session>.log`, `batch.log`): core logs can quote
/// configs, which carry credentials.
pub const LOG_FILE_MODE: u32 = 0o600;

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
    /// An existing log file's mode could not be made private.
    #[error("cannot make log file {} private (mode 0600); check that you own it", path.display())]
    SecureFile {
        /// The file.
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

    /// Creates the root (0700 when new), and `logs/` and `runtime/` (always 0700, fixed when they
    /// exist with another mode, except `runtime/` at [`SHARED_RUNTIME_DIR_MODE`]); makes every
    /// existing file in `logs/` 0600.
    pub fn create_dirs(&self) -> Result<(), PathsError> {
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
                let now = std::fs::metadata(path)
                    .map_err(failed)?
                    .permissions()
                    .mode()
                    & 0o7777;
                let shared = path == self.runtime_dir() && now == SHARED_RUNTIME_DIR_MODE;
                if now != mode && !shared {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .map_err(failed)?;
                }
            }
            Ok(())
        };
        // The root may be a directory the user chose; only logs/ and runtime/ are forced private.
        create(&self.root, PRIVATE_DIR_MODE, false)?;
        create(&self.logs_dir(), PRIVATE_DIR_MODE, true)?;
        create(&self.runtime_dir(), PRIVATE_DIR_MODE, true)?;
        secure_logs(&self.logs_dir())
    }
}

/// Opens a log file for appending, creating it with mode 0600 (whatever the umask); an existing
/// file with another mode is set to 0600 through the open descriptor. Use it for every log the
/// daemon writes or hands to a child as stdout/stderr.
pub fn open_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o7777 != LOG_FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(LOG_FILE_MODE))?;
    }
    Ok(file)
}

/// Sets every regular file directly in `dir` to 0600. Symbolic links are left alone (and not
/// followed); `dir` is 0700 by then, so nobody else can swap one in.
fn secure_logs(dir: &Path) -> Result<(), PathsError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PathsError::SecureFile { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(failed(dir))? {
        let entry = entry.map_err(failed(dir))?;
        let path = entry.path();
        // DirEntry::metadata does not follow symbolic links.
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Removed meanwhile (a log rotated away): nothing to secure.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(&path)(e)),
        };
        if meta.is_file() && meta.permissions().mode() & 0o7777 != LOG_FILE_MODE {
            match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(LOG_FILE_MODE)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other.map_err(failed(&path))?,
            }
        }
    }
    Ok(())
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

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn open_log_creates_0600_and_fixes_an_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("core-1.log");
        open_log(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let old = dir.path().join("daemon.log");
        std::fs::write(&old, "kept\n").unwrap();
        chmod(&old, 0o644);
        use std::io::Write;
        writeln!(open_log(&old).unwrap(), "appended").unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "kept\nappended\n");
    }

    #[test]
    fn create_dirs_fixes_existing_modes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path().join("root"));
        std::fs::create_dir_all(paths.logs_dir()).unwrap();
        std::fs::create_dir_all(paths.runtime_dir()).unwrap();
        chmod(&paths.logs_dir(), 0o777);
        chmod(&paths.runtime_dir(), 0o755);
        let logs = ["daemon.log", "core-7.log", "batch.log"].map(|n| paths.logs_dir().join(n));
        for log in &logs {
            std::fs::write(log, "x").unwrap();
            chmod(log, 0o644);
        }
        // A symbolic link is neither followed nor changed.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        chmod(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, paths.logs_dir().join("link.log")).unwrap();
        std::fs::create_dir(paths.logs_dir().join("sub")).unwrap();
        chmod(&paths.logs_dir().join("sub"), 0o755);

        paths.create_dirs().unwrap();
        assert_eq!(mode(&paths.logs_dir()), 0o700);
        assert_eq!(mode(&paths.runtime_dir()), 0o700);
        for log in &logs {
            assert_eq!(mode(log), 0o600, "{}", log.display());
        }
        assert_eq!(mode(&outside), 0o644);
        assert_eq!(mode(&paths.logs_dir().join("sub")), 0o755);
    }

    #[test]
    fn create_dirs_makes_new_dirs_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path().join("new"));
        paths.create_dirs().unwrap();
        assert_eq!(mode(&paths.logs_dir()), 0o700);
        assert_eq!(mode(&paths.runtime_dir()), 0o700);
    }

    #[test]
    fn create_dirs_keeps_a_shared_runtime_dir_but_not_a_shared_log_dir() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path().join("root"));
        paths.create_dirs().unwrap();
        chmod(&paths.runtime_dir(), SHARED_RUNTIME_DIR_MODE);
        chmod(&paths.logs_dir(), SHARED_RUNTIME_DIR_MODE);
        paths.create_dirs().unwrap();
        assert_eq!(mode(&paths.runtime_dir()), 0o710);
        assert_eq!(mode(&paths.logs_dir()), 0o700);
    }
}
