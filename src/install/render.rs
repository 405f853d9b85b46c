//! Filling a unit template in, with the escaping systemd's unit syntax needs.
//!
//! A service template names its values as `@XRAT_EXE@` and `@XRAT_ROOT@` inside the words of a
//! directive (`ExecStart=@XRAT_EXE@ daemon run-server`, `Environment=XRAT_ROOT=@XRAT_ROOT@`);
//! the socket template names `@XRAT_SOCKET@`, `@XRAT_SOCKS@` and `@XRAT_HTTP@` as whole
//! `ListenStream=` values, and `@XRAT_SOCKET_MODE@`, `@XRAT_SOCKET_GROUP@` and `@XRAT_DIR_MODE@`
//! (`daemon.socket_group`).
//! Each word that holds a placeholder is substituted and then escaped as one unit-file word, so
//! a path with spaces or `%` stays one argument with its exact bytes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a unit cannot be rendered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RenderError {
    /// A path is not UTF-8; unit files are text, so it cannot be written into one.
    #[error("{what} {} is not valid UTF-8, so a unit file cannot name it; move it to a plain path", path.display())]
    NotUtf8 {
        /// Which path ("the xrat executable", "the XRAT root").
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A path holds a newline or another control character, which a unit line cannot carry.
    #[error("{what} {path:?} contains a control character (such as a newline), which a unit file cannot hold; move it to a plain path")]
    ControlChar {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// systemd refuses an executable whose path holds a quote or a backslash, however quoted
    /// ("Executable name contains special characters"), so the unit could never start.
    #[error("the xrat executable {} contains a quote or a backslash, which systemd refuses in an executable path; move xrat to a plain path and install from there", path.display())]
    UnsafeExecutable {
        /// The executable.
        path: PathBuf,
    },
    /// systemd resolves nothing relative: both paths must be absolute.
    #[error("{what} {} is not an absolute path; systemd needs one", path.display())]
    NotAbsolute {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The template names a value render does not know (a bug in the template).
    #[error("the unit template uses an unknown placeholder @{0}@")]
    UnknownPlaceholder(String),
}

/// Renders a service `template` for the executable `exe` and the XRAT root `root`.
///
/// Comment lines are kept as they are; in other lines every word holding a placeholder is
/// substituted and escaped with [`unit_word`].
pub fn render(template: &str, exe: &Path, root: &Path) -> Result<String, RenderError> {
    let exe_text = checked("the xrat executable", exe)?;
    // systemd's string_is_safe() rule for executables; control characters are refused above.
    if exe_text.contains(['"', '\'', '\\']) {
        let path = exe.to_path_buf();
        return Err(RenderError::UnsafeExecutable { path });
    }
    let root = checked("the XRAT root", root)?;
    fill(
        template,
        &[("XRAT_EXE", Some(exe_text)), ("XRAT_ROOT", Some(root))],
    )
}

/// Renders the socket unit `template` for the daemon socket `socket`, the front ports `socks`
/// and `http` (front mode; `None` leaves the line out), and `daemon.socket_group` (`None`: the
/// socket is private, and `SocketGroup=` is left out).
pub fn render_socket(
    template: &str,
    socket: &Path,
    socks: Option<SocketAddr>,
    http: Option<SocketAddr>,
    group: Option<&str>,
) -> Result<String, RenderError> {
    let socket = checked("the daemon socket", socket)?;
    let (socks, http) = (socks.map(|a| a.to_string()), http.map(|a| a.to_string()));
    // The modes the daemon applies itself (reactor/sockgroup.rs, paths.rs).
    let (socket_mode, dir_mode) = match group {
        Some(_) => ("0660", "0710"),
        None => ("0600", "0700"),
    };
    let values = [
        ("XRAT_SOCKET", Some(socket)),
        ("XRAT_SOCKS", socks.as_deref()),
        ("XRAT_HTTP", http.as_deref()),
        ("XRAT_SOCKET_MODE", Some(socket_mode)),
        ("XRAT_SOCKET_GROUP", group),
        ("XRAT_DIR_MODE", Some(dir_mode)),
    ];
    fill(template, &values)
}

/// Substitutes `values` into the directives of `template`. A directive naming a value that is
/// `None` is left out. `ListenStream=` takes its value whole (a path or an address, never
/// unquoted by systemd), so only `%` is escaped there; elsewhere each word holding a placeholder
/// is escaped with [`unit_word`].
fn fill(template: &str, values: &[(&str, Option<&str>)]) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.lines() {
        let comment = line.trim_start().starts_with(['#', ';']);
        let directive = line
            .split_once('=')
            .filter(|(_, v)| !comment && v.contains('@'));
        let Some((key, value)) = directive else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let filled = match key {
            "ListenStream" => substitute(value, values)?.map(|raw| raw.replace('%', "%%")),
            _ => value
                .split(' ')
                .map(|word| match word.contains('@') {
                    true => substitute(word, values).map(|raw| raw.map(|r| unit_word(&r))),
                    false => Ok(Some(word.to_string())),
                })
                .collect::<Result<Option<Vec<_>>, _>>()?
                .map(|words| words.join(" ")),
        };
        if let Some(filled) = filled {
            out.push_str(key);
            out.push('=');
            out.push_str(&filled);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Escapes `raw` as one word of a unit file directive (`ExecStart=`, `Environment=`).
///
/// `%` starts a specifier, so it is doubled. A word with whitespace, quotes, a backslash or a
/// `;` (a command separator in `ExecStart=`) is wrapped in double quotes, inside which `\` and
/// `"` are backslash-escaped (an executable may not contain them at all, see
/// [`RenderError::UnsafeExecutable`]). `$` is left alone: the only word xrat substitutes in `ExecStart=`
/// is the executable, which systemd never expands (`$$` would stay two dollars there), and
/// `Environment=` does not expand variables at all.
pub fn unit_word(raw: &str) -> String {
    let word = raw.replace('%', "%%");
    let needs_quotes = word
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs_quotes {
        return word;
    }
    let escaped = word.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The path as UTF-8 text that a unit line can hold.
fn checked<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, RenderError> {
    let owned = || path.to_path_buf();
    let text = path.to_str().ok_or_else(|| RenderError::NotUtf8 {
        what,
        path: owned(),
    })?;
    if text.chars().any(char::is_control) {
        return Err(RenderError::ControlChar {
            what,
            path: owned(),
        });
    }
    if !path.is_absolute() {
        return Err(RenderError::NotAbsolute {
            what,
            path: owned(),
        });
    }
    Ok(text)
}

/// Replaces every `@NAME@` in `word` in one pass, so a value that itself contains `@…@` is
/// never substituted again; `None` when a named value is absent.
fn substitute(word: &str, values: &[(&str, Option<&str>)]) -> Result<Option<String>, RenderError> {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('@')
            .ok_or_else(|| RenderError::UnknownPlaceholder(after.to_string()))?;
        let name = &after[..end];
        let (_, value) = values
            .iter()
            .find(|(known, _)| *known == name)
            .ok_or_else(|| RenderError::UnknownPlaceholder(name.to_string()))?;
        let Some(value) = value else {
            return Ok(None);
        };
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::Unit;

    fn lines(exe: &str, root: &str) -> (String, String) {
        let unit = render(Unit::Daemon.template(), Path::new(exe), Path::new(root)).unwrap();
        let find = |key: &str| {
            unit.lines()
                .find(|l| l.starts_with(key))
                .unwrap()
                .to_string()
        };
        (find("ExecStart="), find("Environment="))
    }

    #[test]
    fn plain_paths_stay_unquoted() {
        let (exec, env) = lines("/usr/bin/xrat", "/home/u/.config/xrat");
        assert_eq!(exec, "ExecStart=/usr/bin/xrat daemon run-server");
        assert_eq!(env, "Environment=XRAT_ROOT=/home/u/.config/xrat");
    }

    #[test]
    fn spaces_quote_the_whole_word() {
        let (exec, env) = lines("/opt/my apps/xrat", "/home/u/my root");
        assert_eq!(exec, r#"ExecStart="/opt/my apps/xrat" daemon run-server"#);
        assert_eq!(env, r#"Environment="XRAT_ROOT=/home/u/my root""#);
    }

    #[test]
    fn percent_is_doubled_and_dollar_kept() {
        let (exec, env) = lines("/opt/100%/$HOME/xrat", "/r/%n");
        assert_eq!(exec, "ExecStart=/opt/100%%/$HOME/xrat daemon run-server");
        assert_eq!(env, "Environment=XRAT_ROOT=/r/%%n");
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_inside_quotes() {
        let (exec, env) = lines("/a;b/xrat", r#"/r "b"\c;'x'"#);
        assert_eq!(exec, r#"ExecStart="/a;b/xrat" daemon run-server"#);
        assert_eq!(env, r#"Environment="XRAT_ROOT=/r \"b\"\\c;'x'""#);
        assert_eq!(unit_word("50% a"), r#""50%% a""#);
    }

    #[test]
    fn values_are_not_substituted_twice() {
        let (exec, _) = lines("/x/@XRAT_ROOT@/xrat", "/r");
        assert_eq!(exec, "ExecStart=/x/@XRAT_ROOT@/xrat daemon run-server");
    }

    #[test]
    fn every_placeholder_is_filled_and_comments_are_kept() {
        for unit in [Unit::Daemon, Unit::Api] {
            let text = render(unit.template(), Path::new("/b/xrat"), Path::new("/r")).unwrap();
            let directives = text.lines().filter(|l| !l.starts_with('#'));
            assert!(directives.clone().all(|l| !l.contains('@')), "{text}");
            let comments = |t: &str| t.lines().filter(|l| l.starts_with('#')).count();
            assert_eq!(comments(&text), comments(unit.template()));
            assert!(text.ends_with("WantedBy=default.target\n"));
        }
        let api = render(Unit::Api.template(), Path::new("/b/xrat"), Path::new("/r")).unwrap();
        assert!(api.contains("\nExecStart=/b/xrat api serve\n"));
    }

    #[test]
    fn unusable_paths_are_refused() {
        let root = Path::new("/r");
        let t = Unit::Daemon.template();
        let err = render(t, Path::new("/a\nb/xrat"), root).unwrap_err();
        assert!(matches!(err, RenderError::ControlChar { .. }), "{err}");
        for exe in [r#"/a"b/xrat"#, "/o'brien/xrat", r"/a\b/xrat"] {
            let err = render(t, Path::new(exe), root).unwrap_err();
            assert!(matches!(err, RenderError::UnsafeExecutable { .. }), "{err}");
        }
        let err = render(t, Path::new("/b/xrat"), Path::new("rel/root")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the XRAT root rel/root is not an absolute path; systemd needs one"
        );
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/b/\xff/xrat"));
        assert!(matches!(
            render(t, bad, root),
            Err(RenderError::NotUtf8 { .. })
        ));
        let err = render("ExecStart=@NOPE@\n", Path::new("/b/xrat"), root).unwrap_err();
        assert_eq!(err, RenderError::UnknownPlaceholder("NOPE".into()));
    }

    #[test]
    fn socket_paths_keep_their_bytes_and_absent_ports_leave_their_line_out() {
        let t = Unit::Socket.template();
        let socket = Path::new("/r dir/%i \"q\"/runtime/daemon.sock");
        let text = render_socket(t, socket, None, None, None).unwrap();
        let listens: Vec<&str> = text.lines().filter(|l| l.starts_with("Listen")).collect();
        // systemd takes a ListenStream= path whole, quotes included; only % is a specifier.
        assert_eq!(
            listens,
            [r#"ListenStream=/r dir/%%i "q"/runtime/daemon.sock"#]
        );
        assert!(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| !l.contains('@')));
        assert!(text.ends_with("WantedBy=sockets.target\n"));
        let socks = Some("0.0.0.0:1080".parse().unwrap());
        let text = render_socket(t, Path::new("/s"), socks, None, None).unwrap();
        let listens: Vec<&str> = text.lines().filter(|l| l.starts_with("Listen")).collect();
        assert_eq!(listens, ["ListenStream=/s", "ListenStream=0.0.0.0:1080"]);
        let err = render_socket(t, Path::new("rel.sock"), None, None, None).unwrap_err();
        assert!(matches!(
            err,
            RenderError::NotAbsolute {
                what: "the daemon socket",
                ..
            }
        ));
    }
}
